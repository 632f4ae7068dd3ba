#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` and `llama-batched-bench` from the exact llama.cpp source that
# node-llama-cpp ships (its git bundle), so the benchmark compares Infera with llama.cpp at the same commit.
# CPU only, offline. The result is cached under .infera/llama-server/<commit>/ and a second run only prints
# the paths; the bundle's commit is the key, so upgrading node-llama-cpp builds afresh.
#
# Usage: scripts/build-llama-server.sh            builds if needed, prints the bin directory on stdout
#        scripts/build-llama-server.sh --cached   prints it only if already built, else exits 3 (tests use this)
#        JOBS=4 NICE=0 scripts/build-llama-server.sh
#        OPENMP=1 scripts/build-llama-server.sh   upstream's default threading (bin-openmp/), see below
# Env:   JOBS (default 2), NICE (default 19: the build takes ~11 min on 2 idle cores, 30 on a busy box, and
#        must not starve others),
#        INFERA_LLAMA_BUNDLE (default node_modules/node-llama-cpp/llama/gitRelease.bundle),
#        INFERA_LLAMA_BUILD_ROOT (default .infera/llama-server).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="${INFERA_LLAMA_BUNDLE:-$root/node_modules/node-llama-cpp/llama/gitRelease.bundle}"
build_root="${INFERA_LLAMA_BUILD_ROOT:-$root/.infera/llama-server}"
jobs="${JOBS:-2}"
niceness="${NICE:-19}"

log() { printf '[build-llama-server] %s\n' "$*" >&2; }

if [[ ! -f "$bundle" ]]; then
  log "no llama.cpp bundle at $bundle (is node-llama-cpp installed?)"
  exit 1
fi
for tool in git cmake c++; do
  command -v "$tool" >/dev/null || { log "needs $tool on PATH"; exit 1; }
done

commit="$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" { print $1; exit }')"
[[ -n "$commit" ]] || commit="$(git bundle list-heads "$bundle" | awk 'NR == 1 { print $1 }')"
if [[ -z "$commit" ]]; then
  log "cannot read a commit from $bundle"
  exit 1
fi

# Threading: without OpenMP ggml uses its own thread pool, which is what node-llama-cpp's prebuilt libraries
# (and so Infera) run on, so the comparison is about how each server drives the same code rather than
# about two threading runtimes. Upstream's default is OpenMP; OPENMP=1 builds that variant into
# bin-openmp/. Both variants share one build tree, so switching recompiles only ggml (~2 min).
if [[ "${OPENMP:-0}" == "1" ]]; then openmp=ON; suffix=-openmp; else openmp=OFF; suffix=; fi

dir="$build_root/$commit"
bin="$dir/bin$suffix"
stamp="$dir/.built$suffix"
if [[ -f "$stamp" && -x "$bin/llama-server" && -x "$bin/llama-batched-bench" ]]; then
  log "cached: $bin (llama.cpp $commit)"
  echo "$bin"
  exit 0
fi

if [[ "${1:-}" == "--cached" ]]; then
  log "not built yet: run scripts/build-llama-server.sh (llama.cpp $commit)"
  exit 3
fi

mkdir -p "$dir"
# Two benches started together would otherwise build the same tree twice into one directory.
exec 9>"$dir/.lock"
if command -v flock >/dev/null; then
  flock 9
  if [[ -f "$stamp" ]]; then
    log "built meanwhile by another run: $bin"
    echo "$bin"
    exit 0
  fi
fi

src="$dir/src"
if [[ ! -d "$src/.git" ]]; then
  log "unpacking llama.cpp $commit from the bundle"
  rm -rf "$src"
  git init -q "$src"
  git -C "$src" fetch -q "$bundle" "$commit" 2>/dev/null || git -C "$src" fetch -q "$bundle" HEAD
  git -C "$src" -c advice.detachedHead=false checkout -q "$commit"
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# What each flag is for:
#  - no HTTPS, no web UI download, no UI npm build: the build must work offline and the bench needs neither;
#  - static binaries: the cache directory stays self-contained and nothing collides with node-llama-cpp's .so files;
#  - GGML_NATIVE: tuned for this CPU, like the best prebuilt variant node-llama-cpp loads (measured within 0.95-1.12x);
#  - GGML_OPENMP: see above.
log "configuring (cmake ${generator[*]:-make})"
nice -n "$niceness" cmake -S "$src" -B "$dir/build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=ON \
  -DGGML_CCACHE=OFF \
  -DGGML_OPENMP="$openmp" \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_COMMIT="$commit" \
  >"$dir/configure.log" 2>&1 || { log "cmake configure failed; see $dir/configure.log"; tail -20 "$dir/configure.log" >&2; exit 1; }

log "building llama-server and llama-batched-bench with -j$jobs at nice $niceness (about 11 min on 2 cores)"
started=$(date +%s)
nice -n "$niceness" cmake --build "$dir/build" --config Release -j "$jobs" --target llama-server llama-batched-bench \
  >"$dir/build.log" 2>&1 || { log "build failed; see $dir/build.log"; tail -30 "$dir/build.log" >&2; exit 1; }

mkdir -p "$bin"
for exe in llama-server llama-batched-bench; do
  found="$(find "$dir/build" -type f -name "$exe" -perm -u+x | head -n 1)"
  [[ -n "$found" ]] || { log "built, but $exe is not in $dir/build"; exit 1; }
  cp "$found" "$bin/$exe"
done
echo "$commit openmp=$openmp" >"$stamp"
log "built in $(($(date +%s) - started)) s: $bin"
echo "$bin"
