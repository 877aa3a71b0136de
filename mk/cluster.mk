# Scale-out on a real cluster engine (issue 19): Galaxy dispatches the workflow's jobs through a
# one-node Slurm cluster on this machine.  Included by the Makefile; uses the Galaxy, planemo and
# image of mk/galaxy.mk and mk/container.mk.  Guide for administrators: docs/cluster.md.
#
#   make cluster-test    Slurm (Debian's slurmctld, slurmd, munge; apt-get install when missing)
#                        and two Galaxy servers of their own (`cluster`: every job through Slurm;
#                        `cluster-local`: the local runner), the workflow on test-data/wf_* in 4
#                        parts on both, one ifu_extract_run job in the container through Slurm, one
#                        failing job; spectra byte-identical; last line `K of N jobs ran through
#                        Slurm`.  Everything it starts is stopped at the end.
#   make cluster-bench   the scaling measurement of bench/README.md: a synthetic 300x300x3681 field
#                        with 2000 objects through the workflow in 1, 2 and 4 parts on the Slurm
#                        node (slow: not part of `make test`)
#   make slurm-start / slurm-stop / slurm-status   the cluster alone (SLURM_CONF: make slurm-conf)
CLUSTER_SCRIPTS := tests/galaxy/cluster

.PHONY: cluster-test cluster-bench slurm-install slurm-start slurm-stop slurm-status slurm-conf

slurm-install:
	bash $(CLUSTER_SCRIPTS)/slurm.sh install

slurm-start:
	bash $(CLUSTER_SCRIPTS)/slurm.sh start

slurm-stop:
	bash $(CLUSTER_SCRIPTS)/slurm.sh stop

slurm-status:
	-bash $(CLUSTER_SCRIPTS)/slurm.sh status

slurm-conf:
	@bash $(CLUSTER_SCRIPTS)/slurm.sh conf

# Its own servers, not galaxy-start's `test` one (which galaxy-test, workflow-test and browser-test
# share): nothing of theirs is reconfigured.
cluster-test: galaxy $(STAMP) image slurm-install
	bash $(CLUSTER_SCRIPTS)/cluster_test.sh

cluster-bench: galaxy $(STAMP) image slurm-install
	bash $(CLUSTER_SCRIPTS)/cluster_bench.sh

# In `make test` after the other Galaxy tests: 21 minutes on the shared 2-core machine at load
# 12-17 (docs/cluster.md); not measured on an idle machine.
TEST_TARGETS_LAST += cluster-test
