"""The Slurm job configuration and the pieces of the cluster test that run without a cluster.

- docs/cluster.md's job configuration asks the same runners, resources and routes as the tested
  template tests/galaxy/cluster/job_conf_slurm.yml.in (the guide cannot drift from the test);
- the ``sacct`` shim answers Galaxy's question from a job-completion log with Slurm's verdict
  (FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED) and passes any other use to the real sacct;
- check_slurm_jobs.read_jobcomp reads jobcomp/filetxt lines.
"""

from __future__ import annotations

import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "galaxy" / "cluster"
SHIM = CLUSTER / "bin" / "sacct"

# Four real records as slurmctld 22.05 writes them (jobcomp/filetxt), fields shortened.
JOBCOMP = """\
JobId=7 UserId=root(0) GroupId=root(0) Name=g12_ifu_extract_image_cluster_example_org JobState=FAILED Partition=ifx TimeLimit=UNLIMITED StartTime=2026-12-07T01:56:25 EndTime=2026-12-07T01:56:26 NodeList=vm NodeCnt=1 ProcCnt=1 ExitCode=1:0
JobId=8 UserId=root(0) GroupId=root(0) Name=g13_ifu_extract_extract_cluster_example_org JobState=TIMEOUT Partition=ifx TimeLimit=1 StartTime=2026-12-07T01:57:00 EndTime=2026-12-07T01:58:00 NodeList=vm NodeCnt=1 ProcCnt=2 ExitCode=0:15
JobId=9 UserId=root(0) GroupId=root(0) Name=g14_ifu_extract_report_cluster_example_org JobState=OUT_OF_MEMORY Partition=ifx TimeLimit=UNLIMITED StartTime=2026-12-07T01:59:00 EndTime=2026-12-07T01:59:30 NodeList=vm NodeCnt=1 ProcCnt=2 ExitCode=0:125
JobId=10 UserId=root(0) GroupId=root(0) Name=g15_ifu_extract_split_cluster_example_org JobState=COMPLETED Partition=ifx TimeLimit=UNLIMITED StartTime=2026-12-07T02:00:00 EndTime=2026-12-07T02:00:01 NodeList=vm NodeCnt=1 ProcCnt=1 ExitCode=0:0
"""


def yaml_block(markdown: str) -> dict:
    """The first ```yaml block of the guide (the Slurm job configuration)."""
    block = re.search(r"```yaml\n(.*?)```", markdown, re.S)
    assert block, "docs/cluster.md has no yaml block"
    return yaml.safe_load(block.group(1))


def rendered_template(cores: int) -> dict:
    text = (CLUSTER / "job_conf_slurm.yml.in").read_text()
    container = ("    slurm_container_ifu:\n      runner: slurm\n      shell_plugin: LocalShell\n"
                 "      job_plugin: Slurm\n      job_partition: main\n"
                 f"      job_ncpus: {cores}\n      job_--mem: 4G\n      docker_enabled: true\n")
    # The test renders the container environment from render_config.py: take its resource lines.
    sys.path.insert(0, str(ROOT / "tests" / "galaxy"))
    try:
        import render_config
    finally:
        sys.path.pop(0)
    runner = string.Template(render_config.SLURM_RUNNER).substitute(PARTITION="main", CORES=cores)
    assert runner in container, "render_config.SLURM_RUNNER and this test disagree"
    values = {"SLURM_PARTITION": "main", "SLURM_CORES": str(cores), "JOB_BIN": "/opt/ifu-extract/bin",
              "SLURM_CONTAINER_ENVIRONMENT": container, "RUN_ENVIRONMENT": "slurm_container_ifu",
              "EXTRA_ENV": ""}
    return yaml.safe_load(string.Template(text).substitute(values))


RESOURCE_KEYS = ("runner", "shell_plugin", "job_plugin", "job_partition", "job_ncpus", "job_--mem")


def test_guide_asks_what_the_tested_template_asks():
    guide = yaml_block((ROOT / "docs" / "cluster.md").read_text())
    cores = guide["execution"]["environments"]["slurm_ifu_multi"]["job_ncpus"]
    tested = rendered_template(cores)
    assert guide["runners"] == tested["runners"]
    assert guide["execution"]["default"] == tested["execution"]["default"] == "slurm_ifu"
    g_envs, t_envs = guide["execution"]["environments"], tested["execution"]["environments"]
    assert sorted(g_envs) == sorted(t_envs)
    for name in t_envs:
        assert {k: g_envs[name].get(k) for k in RESOURCE_KEYS} == \
            {k: t_envs[name].get(k) for k in RESOURCE_KEYS}, name
    assert guide["tools"] == tested["tools"]
    # Every tool whose wrapper passes GALAXY_SLOTS to --threads gets the multi-core environment.
    threaded = {re.search(r'<tool id="([^"]+)"', p.read_text()).group(1)
                for p in (ROOT / "wrappers").glob("*.xml")
                if p.name != "macros.xml" and "@THREADS@" in p.read_text()}
    routed = {t["id"] for t in tested["tools"] if t["environment"] != "slurm_ifu"}
    assert threaded == routed


@pytest.fixture()
def cluster_files(tmp_path):
    log = tmp_path / "jobcomp.log"
    log.write_text(JOBCOMP)
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=ifx\nJobCompType=jobcomp/filetxt\nJobCompLoc={log}\n")
    # A stand-in for the real sacct, after the shim on PATH: says who called it.
    real = tmp_path / "realbin"
    real.mkdir()
    (real / "sacct").write_text("#!/bin/sh\necho \"real sacct $*\"\n")
    (real / "sacct").chmod(0o755)
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{SHIM.parent}:{real}:/usr/bin:/bin")
    return env


def sacct(env, *args):
    return subprocess.run([str(SHIM), *args], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("job, state", [("7", "FAILED"), ("8", "TIMEOUT"), ("9", "OUT_OF_MEMORY"),
                                         ("10", "COMPLETED")])
def test_sacct_shim_gives_slurms_verdict(cluster_files, job, state):
    assert sacct(cluster_files, "-o", "JobIDRaw,State", "-P", "-n", "-j", job) == f"{job}|{state}\n"


def test_sacct_shim_passes_other_questions_on(cluster_files):
    assert sacct(cluster_files, "-j", "7") == "real sacct -j 7\n"
    assert sacct(cluster_files, "-o", "JobID,Elapsed", "-P", "-n", "-j", "7") == \
        "real sacct -o JobID,Elapsed -P -n -j 7\n"


def test_read_jobcomp(tmp_path):
    sys.path.insert(0, str(CLUSTER))
    try:
        import check_slurm_jobs
    finally:
        sys.path.pop(0)
    log = tmp_path / "jobcomp.log"
    log.write_text(JOBCOMP)
    records = check_slurm_jobs.read_jobcomp(log)
    assert sorted(records, key=int) == ["7", "8", "9", "10"]
    assert records["8"]["JobState"] == "TIMEOUT" and records["8"]["ProcCnt"] == "2"
    assert records["7"]["Name"] == "g12_ifu_extract_image_cluster_example_org"
    assert check_slurm_jobs.short_tool("toolshed.g2.bx.psu.edu/repos/x/y/ifu_extract_run/0.1") == \
        "ifu_extract_run"
