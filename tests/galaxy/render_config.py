"""Render the Galaxy configuration of one server instance from the templates next to this file.

Run with the Galaxy venv's python (it locates Galaxy's bundled tools through the installed
package).  Everything machine-specific (the clone, the cache, the port, the package's venv) is
passed in here at run time; the templates in the repository hold none of it.  Secrets (the
bootstrap admin key, id_secret) are made once per instance and kept in its folder.

    python render_config.py --instance DIR --repo DIR --ifu-venv DIR --host H --port N [--watch]
                            [--container-tool ID] [--slurm-conf FILE --slurm-cores N]
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: With a Celery worker (galaxy.sh starts one next to the web server), uploads and metadata run
#: in forks of that already started process instead of new Python processes importing Galaxy in
#: every job script (about 15 s of CPU each on these machines).  Broker and results in SQLite.
CELERY_TASKS = """\
  enable_celery_tasks: true
  metadata_strategy: directory_celery
  amqp_internal_connection: sqlalchemy+sqlite:///${DATA_DIR}/control.sqlite?isolation_level=IMMEDIATE
  celery_conf:
    result_backend: db+sqlite:///${DATA_DIR}/results.sqlite"""

#: The containerised destination (issue 6): Galaxy wraps the tool's command in `docker run` of
#: the tool's <container> (ifu-extract:<version>, built by `make image`), through podman with the
#: project's storage (containers/podman-galaxy.sh speaks the docker CLI).  No network, no pull from
#: a registry (the front end refuses unless IFX_PODMAN_PULL=1), a job without a container fails
#: instead of running on the host, and the ulimits are the host's hard limits (podman cannot raise
#: its defaults above them without CAP_SYS_RESOURCE).  Galaxy's default volumes ($defaults: Galaxy,
#: the tool folder, the job folder, the working folder, the file store) and user (UID:GID of the
#: Galaxy process) are kept.
CONTAINER_ENVIRONMENT = """\
    ${NAME}:
${RUNNER}
      docker_enabled: true
      require_container: true
      docker_cmd: ${PODMAN_FRONT_END}
      docker_sudo: false
      docker_net: none
      docker_auto_rm: true
      docker_run_extra_arguments: ${ULIMITS}
      env:
        - name: OMP_NUM_THREADS
          value: "1"
        - name: OPENBLAS_NUM_THREADS
          value: "1"
${EXTRA_ENV}"""

#: Where the containerised environment runs: the local runner (one slot), or Slurm (issue 19; the
#: same cores and memory as the multi-core tools of tests/galaxy/cluster/job_conf_slurm.yml.in).
LOCAL_RUNNER = """\
      runner: local
      local_slots: 1"""
SLURM_RUNNER = """\
      runner: slurm
      shell_plugin: LocalShell
      job_plugin: Slurm
      job_partition: ${PARTITION}
      job_ncpus: ${CORES}
      job_--mem: 4G"""

#: Our report HTML keeps its JavaScript/CSS: these tools are on the sanitize allow-list.
UNSANITIZED_TOOLS = ("ifu_extract_report", "ifu_extract_run", "ifu_extract_merge")


def secret(path: Path, nbytes: int) -> str:
    """A random token stored in PATH (made on first use, then reused)."""
    if not path.exists():
        path.write_text(secrets.token_hex(nbytes) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def render(template: str, dest: Path, values: dict) -> None:
    text = string.Template((HERE / template).read_text()).substitute(values)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dest)


def host_ulimits(front_end: Path) -> str:
    """``--ulimit`` options at this host's hard limits, as the podman front end computes them."""
    return subprocess.run([str(front_end), "--print-ulimits"], check=True, capture_output=True,
                          text=True).stdout.strip()


def job_env_entries(pairs: list[str]) -> str:
    """``NAME=VALUE`` pairs as entries of a job environment's ``env`` list (8 spaces in)."""
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"render_config: --job-env {pair!r}: expected NAME=VALUE")
        out.append(f'        - name: {name}\n          value: "{value}"\n')
    return "".join(out)


def container_environment(repo: Path, name: str, runner: str, extra_env: str = "") -> str:
    """The containerised environment NAME on RUNNER (a job_conf.yml fragment)."""
    front_end = repo / "containers" / "podman-galaxy.sh"
    return string.Template(CONTAINER_ENVIRONMENT).substitute(
        NAME=name, RUNNER=runner, PODMAN_FRONT_END=str(front_end), ULIMITS=host_ulimits(front_end),
        EXTRA_ENV=extra_env)


def container_blocks(repo: Path, tools: list[str], extra_env: str = "") -> tuple[str, str]:
    """The containerised environment and the routes of TOOLS to it (job_conf.yml fragments)."""
    if not tools:
        return "", ""
    env = container_environment(repo, "container_ifu", LOCAL_RUNNER, extra_env)
    routes = "tools:\n" + "".join(
        f"  - id: {tool}\n    environment: container_ifu\n" for tool in tools)
    return env, routes


def slurm_values(repo: Path, tools: list[str], partition: str, cores: int,
                 extra_env: str = "") -> dict:
    """Fields of cluster/job_conf_slurm.yml.in: every job through Slurm (issue 19)."""
    values = {"SLURM_PARTITION": partition, "SLURM_CORES": str(cores),
              "SLURM_CONTAINER_ENVIRONMENT": "", "RUN_ENVIRONMENT": "slurm_ifu_multi"}
    if "ifu_extract_run" in tools:
        runner = string.Template(SLURM_RUNNER).substitute(PARTITION=partition, CORES=cores)
        values["SLURM_CONTAINER_ENVIRONMENT"] = container_environment(repo, "slurm_container_ifu",
                                                                      runner, extra_env)
        values["RUN_ENVIRONMENT"] = "slurm_container_ifu"
    if set(tools) - {"ifu_extract_run"}:
        raise SystemExit("render_config: with --slurm-conf only ifu_extract_run has a container route")
    return values


def wrapper_entries(wrappers: Path) -> str:
    tools = sorted(p for p in wrappers.glob("*.xml") if p.name != "macros.xml")
    return "\n".join(f'        <tool file="{p}" />' for p in tools)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", required=True, type=Path)
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--ifu-venv", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--admin-email", default="admin@example.org")
    ap.add_argument("--watch", action="store_true",
                    help="reload tools when a wrapper changes (needs the watchdog package, which "
                         "the Galaxy venv lacks: off by default; restart Galaxy instead)")
    ap.add_argument("--celery", action="store_true",
                    help="Celery tasks on (uploads and metadata in a worker galaxy.sh starts)")
    ap.add_argument("--container-tool", action="append", default=[], metavar="TOOL_ID",
                    help="run this tool's jobs in its container (the image must be built: "
                         "make image); repeat for more tools")
    ap.add_argument("--job-env", action="append", default=[], metavar="NAME=VALUE",
                    help="a variable set in every job's environment (repeat for more)")
    ap.add_argument("--slurm-conf", type=Path, default=None,
                    help="every job through this Slurm cluster (cluster/job_conf_slurm.yml.in; "
                         "SLURM_CONF of the Galaxy process must name the same file)")
    ap.add_argument("--slurm-partition", default="ifx")
    ap.add_argument("--slurm-cores", type=int, default=2,
                    help="cores (GALAXY_SLOTS) of run, extract, merge and report jobs")
    args = ap.parse_args()

    import galaxy.tools  # the Galaxy venv's package: where its bundled tools are

    model_tools = Path(galaxy.tools.__file__).parent
    bundled = model_tools / "bundled"

    instance = args.instance.resolve()
    config_dir, data_dir, job_bin = instance / "config", instance / "data", instance / "job-bin"
    for d in (config_dir, data_dir, job_bin):
        d.mkdir(parents=True, exist_ok=True)

    # The jobs' PATH gets a folder holding only a link to our console script: the jobs find
    # ifu-extract without the package's python (or anything else of its venv) shadowing Galaxy's.
    target = (args.ifu_venv / "bin" / "ifu-extract").resolve()
    if not target.exists():
        raise SystemExit(f"render_config: {target} not found: run 'make venv' first")
    link = job_bin / "ifu-extract"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)

    repo = args.repo.resolve()
    extra_env = job_env_entries(args.job_env)
    container_env, tool_routes = container_blocks(repo, args.container_tool, extra_env)
    values = {
        "REPO_ROOT": str(repo),
        "CONFIG_DIR": str(config_dir),
        "DATA_DIR": str(data_dir),
        "JOB_BIN": str(job_bin),
        "HOST": args.host,
        "PORT": str(args.port),
        "ADMIN_KEY": secret(instance / "admin_key", 16),
        "ID_SECRET": secret(instance / "id_secret", 16),
        "ADMIN_EMAIL": args.admin_email,
        "WATCH_TOOLS": "true" if args.watch else "false",
        "IFU_TOOLS": wrapper_entries(repo / "wrappers"),
        "BUNDLED_TOOLS": str(bundled),
        "MODEL_TOOLS": str(model_tools),
        "CONTAINER_ENVIRONMENT": container_env,
        "TOOL_ROUTES": tool_routes,
        "EXTRA_ENV": extra_env,
        "CELERY_BLOCK": (string.Template(CELERY_TASKS).substitute(DATA_DIR=str(data_dir))
                         if args.celery else "  enable_celery_tasks: false"),
    }
    render("galaxy.yml.in", config_dir / "galaxy.yml", values)
    if args.slurm_conf is None:
        render("job_conf.yml.in", config_dir / "job_conf.yml", values)
    else:
        values.update(slurm_values(repo, args.container_tool, args.slurm_partition,
                                   args.slurm_cores, extra_env))
        render("cluster/job_conf_slurm.yml.in", config_dir / "job_conf.yml", values)
    render("tool_conf.xml.in", config_dir / "tool_conf.xml", values)
    (config_dir / "dependency_resolvers_conf.xml").write_text(
        "<dependency_resolvers>\n  <!-- none: jobs find ifu-extract on PATH -->\n</dependency_resolvers>\n")
    (config_dir / "sanitize_allowlist.txt").write_text("\n".join(UNSANITIZED_TOOLS) + "\n")
    shed = config_dir / "shed_tool_conf.xml"
    if not shed.exists():
        shed.write_text(f'<?xml version="1.0"?>\n<toolbox tool_path="{data_dir}/shed_tools">\n</toolbox>\n')


if __name__ == "__main__":
    main()
