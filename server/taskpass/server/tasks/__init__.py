"""The task a workload says it is about to perform."""
