"""What the parent and the stage processes share below both: the run's cross-process state
(`shared`: the stop/go flags and the stage board) and CPU placement (`placement`: which cores
each stage runs on; the config checks ``pipeline.cpus`` with it, the profile names the cores).
Imports nothing of `pipeline.runtime` or `pipeline.stages`."""
