#!/usr/bin/env bash
# Build the project's local images without any registry, cached by recipe hash.
#
#   scripts/build-images.sh demo            the kernel-ready demo image (what the set-up command needs)
#   scripts/build-images.sh demo-multiuser  that and its GPU build (scripts/demo-multiuser.sh)
#   scripts/build-images.sh test            the images the test suite runs kernels in
#   scripts/build-images.sh all             all of these
#   scripts/build-images.sh tags SET        print the tags a set builds (the base's first)
#
# The base is Debian minbase from debootstrap plus python3-ipykernel and pip, turned into an image
# with `docker import`; every other image is `docker build` FROM it. Each image carries the hash of
# its recipe (its folder under images/, this script, and its base's hash) as a label, and a build
# is skipped when an image with that tag and hash already exists: a second run costs seconds.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
images="$repo/images"
hash_label=org.jupyter-gpu-containers.recipe-hash

log() { printf '[build-images] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

recipe_hash() { # folder [extra-string]
  { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    sha256sum <"$repo/scripts/build-images.sh"  # the content only: not where the clone lives
    printf '%s' "${2:-}"; } | sha256sum | cut -c1-16
}

built_hash() { docker image inspect --format "{{index .Config.Labels \"$hash_label\"}}" "$1" 2>/dev/null || true; }

# The Debian mirror this machine's apt already uses, so debootstrap reaches what apt reaches.
apt_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | awk '{print $2}' | head -n1 || true)
  printf '%s' "$uri"
}

build_base() {
  # shellcheck source=/dev/null
  . "$images/base/recipe.conf"
  local hash; hash=$(recipe_hash "$images/base")
  if [ "$(built_hash "$TAG")" = "$hash" ]; then log "$TAG is up to date ($hash)"; BASE_TAG=$TAG; BASE_HASH=$hash; return; fi
  command -v debootstrap >/dev/null || { log "installing debootstrap"; as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  local work; work=$(mktemp -d /tmp/jgc-rootfs.XXXXXX)
  trap 'as_root rm -rf "$work"' RETURN
  log "debootstrap $SUITE into $work (a minute or two)"
  as_root debootstrap --variant=minbase "$SUITE" "$work/rootfs" $(apt_mirror) >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  log "installing $PACKAGES into the rootfs"
  as_root chroot "$work/rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }
  as_root chroot "$work/rootfs" apt-get clean
  as_root rm -rf "$work/rootfs/var/lib/apt/lists"/* "$work/rootfs/var/cache/apt"/*.bin
  log "importing as $TAG"
  as_root tar -C "$work/rootfs" -c . | docker import \
    --change "LABEL $hash_label=$hash" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$TAG" >/dev/null
  BASE_TAG=$TAG; BASE_HASH=$hash
}

build_derived() { # folder tag
  local dir="$images/$1" tag=$2 hash
  hash=$(recipe_hash "$dir" "$BASE_HASH")
  if [ "$(built_hash "$tag")" = "$hash" ]; then log "$tag is up to date ($hash)"; return; fi
  log "building $tag"
  local out; out=$(docker build -q --build-arg "BASE=$BASE_TAG" --label "$hash_label=$hash" -t "$tag" "$dir" 2>&1) \
    || { printf "%s\n" "$out" >&2; exit 1; }
}

# What each set builds: folder and tag, in build order. "tags SET" prints a set's tags (with the
# base's), so that other scripts name exactly these images and not others that share their labels.
demo_set=("demo jgc/demo:bookworm")
multiuser_set=("${demo_set[@]}" "demo-cuda jgc/demo-cuda:12.2")
test_set=("ngc-like jgc-test/ngc-like:24.05-py3" "conda-nonroot jgc-test/conda-nonroot:latest"
  "no-ipykernel jgc-test/no-ipykernel:latest")
set_of() {
  case "$1" in
    demo) printf '%s\n' "${demo_set[@]}" ;;
    demo-multiuser) printf '%s\n' "${multiuser_set[@]}" ;;
    test) printf '%s\n' "${test_set[@]}" ;;
    all) printf '%s\n' "${multiuser_set[@]}" "${test_set[@]}" ;;
    *) log "usage: $0 [tags] demo|demo-multiuser|test|all"; exit 2 ;;
  esac
}

if [ "${1:-}" = tags ]; then
  # shellcheck source=/dev/null
  . "$images/base/recipe.conf"
  entries=$(set_of "${2:-demo}")
  printf '%s\n' "$TAG"
  printf '%s\n' "$entries" | awk '{print $2}'
  exit 0
fi

entries=$(set_of "${1:-demo}")
build_base
while read -r folder tag; do build_derived "$folder" "$tag"; done <<<"$entries"
