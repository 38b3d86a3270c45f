"""Images: what an image is (catalog, compatibility verdicts), whether it can run a kernel
(the readiness probe), pulls and registry logins, scheduled pre-pulls and pruning,
privately pulled references."""
