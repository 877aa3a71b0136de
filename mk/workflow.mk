# The published Galaxy workflow (workflows/ifu-spectral-extraction, issue 7).  Included by the
# Makefile; uses the Galaxy and planemo of mk/galaxy.mk.
#
#   make workflow-lint    planemo workflow_lint, plain and --iwc
#   make workflow-test    planemo test of the workflow, the 3-chunk vs 1-chunk comparison and the
#                         1-chunk run (defaults) vs `ifu-extract run` (the same summary), on
#                         the Galaxy of galaxy-start (one per make run)
#   make browser-test     a user's run through the web UI, headless Chromium (Debian) + Selenium,
#                         on the Galaxy of galaxy-start (the one Galaxy of a `make test` run)
#   make browser-docs     the same against the `make serve` Galaxy (started for it when not
#                         running), then copies the key screenshots to docs/workflow-*.png
#   make demo-galaxy      the workflow on mpdaf's full minicube (slower)
#   make workflow-data    regenerate test-data/wf_* (test-data/make_workflow_data.py)
WORKFLOW_SCRIPTS := tests/galaxy/workflow
WORKFLOW_DIR := workflows/ifu-spectral-extraction

.PHONY: workflow-lint workflow-test workflow-chunks browser-test browser-docs demo-galaxy workflow-data

workflow-lint: galaxy
	bash $(WORKFLOW_SCRIPTS)/lint.sh $(WORKFLOW_DIR)

workflow-test: galaxy-start
	bash $(WORKFLOW_SCRIPTS)/run_workflow_test.sh
	bash $(WORKFLOW_SCRIPTS)/compare_chunks.sh

workflow-chunks: galaxy-start
	bash $(WORKFLOW_SCRIPTS)/compare_chunks.sh

browser-test: galaxy-start
	IFU_GALAXY_NAME=test bash $(WORKFLOW_SCRIPTS)/browser_test.sh

browser-docs: galaxy $(STAMP)
	bash $(WORKFLOW_SCRIPTS)/browser_test.sh --docs

demo-galaxy: galaxy-start
	bash $(WORKFLOW_SCRIPTS)/demo_galaxy.sh

workflow-data: $(STAMP)
	$(PY) test-data/make_workflow_data.py

# Run by `make test` after the wrapper tests, on the same Galaxy (about 6.5 minutes).
TEST_TARGETS += workflow-lint workflow-test browser-test
