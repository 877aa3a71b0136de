# The container image (issue 6): `make image` builds ifu-extract:<version> with podman,
# `make image-test` runs the smoke test inside it with no network.  See containers/README.md.
# Both run as root; containers/build.sh installs podman, runc and debootstrap with apt if needed.

.PHONY: image image-test image-clean

IMAGE_VERSION = $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE_TAG = ifu-extract:$(IMAGE_VERSION)
IMAGE_STATE ?= $(or $(IFX_PODMAN_HOME),$(shell getent passwd $$(id -un) | cut -d: -f6)/.cache/ifu-extract/podman)
# The image is rebuilt when any of its inputs changes: the Dockerfile and its ignore file, the
# build script (it holds the base image's recipe), the pins, pyproject and the package sources.
# Computed only when `image` runs (recursive variable), so other targets do not pay for it.
IMAGE_KEY = $(shell { ls containers/Dockerfile containers/Dockerfile.dockerignore containers/build.sh \
	pyproject.toml README.md LICENSE requirements/constraints.txt requirements/build-constraints.txt; \
	find tools -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*'; } \
	| LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)

# podman's own layer cache makes a rebuild with unchanged inputs take seconds; the stamp skips
# even that while the tagged image is still in the project's storage.
image:
	@key=$(IMAGE_KEY); stamp=$(IMAGE_STATE)/image-$$key.stamp; \
	if [ -f $$stamp ] && containers/podman-galaxy.sh image exists $(IMAGE_TAG) 2>/dev/null; then \
		echo "image: $(IMAGE_TAG) is up to date (inputs $$key; force a rebuild with 'make image-clean image')"; \
	else \
		containers/build.sh && rm -f $(IMAGE_STATE)/image-*.stamp && touch $$stamp; \
	fi

image-test: image
	containers/image-test.sh

# Forget the stamp (podman's layer cache stays: the rebuild reuses every unchanged layer).
image-clean:
	rm -f $(IMAGE_STATE)/image-*.stamp

TEST_TARGETS += image image-test
