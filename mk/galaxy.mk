# Galaxy wrappers (wrappers/), a real Galaxy server and planemo (issue 5).  Included by the Makefile.
#
#   make galaxy        install Galaxy 26.1.1 and planemo 0.75.47 into venvs in the cache (once)
#   make serve         Galaxy with the IFU extract tools on http://127.0.0.1:8080 (Ctrl-C stops it)
#   make galaxy-lint   planemo lint --fail_level warn wrappers/ and planemo shed_lint
#   make galaxy-test   every wrapper test on one started Galaxy (two planemo processes);
#                      ifu_extract_run runs in the image (make image) and the test proves it
#   make galaxy-start / galaxy-stop / galaxy-status   the test server, for other Galaxy tests
#   make galaxy-data   regenerate test-data/gx_* (test-data/make_galaxy_data.py)
#   make galaxy-screenshot   docs/galaxy-detect-form.png (headless Chromium, Debian packages)
#
# The cache (IFU_EXTRACT_CACHE, default $XDG_CACHE_HOME/ifu-extract or ~/.cache/ifu-extract) holds
# the venvs keyed by the pins in requirements/galaxy-constraints.txt and planemo-constraints.txt,
# and each clone's server state; nothing of it is in the clone.
GALAXY_SCRIPTS := tests/galaxy

.PHONY: galaxy serve galaxy-lint galaxy-test galaxy-start galaxy-stop galaxy-status galaxy-data \
	galaxy-screenshot

galaxy:
	bash $(GALAXY_SCRIPTS)/install.sh

serve: galaxy $(STAMP)
	IFU_GALAXY_NAME=serve bash $(GALAXY_SCRIPTS)/galaxy.sh serve

galaxy-lint: galaxy
	bash $(GALAXY_SCRIPTS)/lint.sh

# One server per make run: started (fresh database) unless one of this clone already runs, and
# stopped when this make ends ($$PPID of a recipe line is make), so that later Galaxy targets of
# the same `make test` (workflow, browser tests) reuse it.
# The test server runs ifu_extract_run in the container image (issue 6), so it needs the image.
galaxy-start: galaxy $(STAMP) image
	IFU_GALAXY_CONTAINER=1 bash $(GALAXY_SCRIPTS)/galaxy.sh start --fresh --owner-pid $$PPID

galaxy-test: galaxy-start
	bash $(GALAXY_SCRIPTS)/run_planemo.sh

galaxy-stop:
	bash $(GALAXY_SCRIPTS)/galaxy.sh stop

galaxy-status:
	-bash $(GALAXY_SCRIPTS)/galaxy.sh status

galaxy-data: $(STAMP)
	$(PY) test-data/make_galaxy_data.py

galaxy-screenshot: galaxy $(STAMP)
	bash $(GALAXY_SCRIPTS)/screenshot.sh

TEST_TARGETS += galaxy-lint galaxy-test
