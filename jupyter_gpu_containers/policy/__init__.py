"""The administrator's policy for containers, the checks a launch's inputs pass, and the
pure plan of a kernel's container."""
