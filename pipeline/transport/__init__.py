"""Transport between the processes of a run: the shared-memory frame ring (pixels, written
once), the ZeroMQ bus (ipc endpoints, one context per process) and the typed messages."""
