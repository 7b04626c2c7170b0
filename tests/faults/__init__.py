"""Fault-injection tests: SIGKILL at random points, then the same command must finish the job."""
