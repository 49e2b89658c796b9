"""Running a pipeline in the main process: inputs checked (`inputs`), the topology table
(`topology`), stage processes built from it (`processes`), the supervisor (`supervisor`) with
its watchdog and restart policy (`watchdog`), signals (`signals`), the state shared without
messages (`shared`), per-run names and clean-up (`cleanup`), and the entry point (`app`)."""
