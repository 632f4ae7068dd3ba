#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` and `llama-batched-bench` from the exact llama.cpp source that
# node-llama-cpp ships (its git bundle), so the benchmark compares Infera with llama.cpp at the same commit.
# CPU only, offline. The result is cached under .infera/llama-server/<commit>/ and a second run only prints
# the paths; the bundle's commit is the key, so upgrading node-llama-cpp builds afresh.
#
# Usage: scripts/build-llama-server.sh            builds if needed, prints the bin directory on stdout
#        scripts/build-llama-server.sh --cached   prints it only if already built, else exits 3 (tests use this)
#        scripts/build-llama-server.sh --cpu-backend [--cached]
#            builds (or, with --cached, only finds) ggml's CPU backend alone, as a dynamically loadable
#            module tuned for this CPU, into .infera/llama-server/<commit>/cpu-backend/ with a build.json
#            that the FFI runner checks before loading it in place of node-llama-cpp's prebuilt variant
#            (llamaCpp.cpuBackend, docs/CONFIGURATION.md). Prints that directory. ~5 min on 2 idle cores.
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

cached_only=0
target=server
for arg in "$@"; do
  case "$arg" in
    --cached) cached_only=1 ;;
    --cpu-backend) target=cpu-backend ;;
    *) log "unknown argument $arg"; exit 2 ;;
  esac
done

dir="$build_root/$commit"
src="$dir/src"

# Both targets build from one unpacked tree; the lock keeps two runs from unpacking it at once.
unpack_source() {
  exec 8>"$dir/.lock-src"
  command -v flock >/dev/null && flock 8
  if [[ ! -d "$src/.git" ]]; then
    log "unpacking llama.cpp $commit from the bundle"
    rm -rf "$src"
    git init -q "$src"
    git -C "$src" fetch -q "$bundle" "$commit" 2>/dev/null || git -C "$src" fetch -q "$bundle" HEAD
    git -C "$src" -c advice.detachedHead=false checkout -q "$commit"
  fi
  exec 8>&-
}

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

if [[ "$target" == "cpu-backend" ]]; then
  out="$dir/cpu-backend"
  if [[ -f "$out/build.json" && -f "$out/libggml-cpu.so" ]]; then
    log "cached: $out (llama.cpp $commit)"
    echo "$out"
    exit 0
  fi
  if [[ "$cached_only" == "1" ]]; then
    log "CPU backend not built yet: run scripts/build-llama-server.sh --cpu-backend (llama.cpp $commit)"
    exit 3
  fi
  mkdir -p "$dir"
  exec 9>"$dir/.lock-cpu-backend"
  command -v flock >/dev/null && flock 9
  if [[ -f "$out/build.json" ]]; then
    log "built meanwhile by another run: $out"
    echo "$out"
    exit 0
  fi
  unpack_source
  # Only the CPU backend is swapped in at run time: node-llama-cpp's libggml-base, libggml and libllama
  # stay, so the module must link against them by name and nothing else:
  #  - BUILD_SHARED_LIBS + GGML_BACKEND_DL: ggml-cpu becomes a module loaded by ggml_backend_load();
  #  - no versioned soname: the module then needs "libggml-base.so", the soname of node-llama-cpp's
  #    libggml-base, which the process has loaded already, so the dynamic linker binds to that copy;
  #  - no rpath: a second libggml-base (this build's) can never be found and loaded beside it;
  #  - GGML_OPENMP off: ggml's own thread pool, as in the prebuilt (the runner drives ggml_threadpool_new);
  #  - compiled here for this CPU, the point of this build: node-llama-cpp's prebuilt variants come from
  #    GCC 11 with fixed -m flags, and its F16 kernel spills accumulators that this compiler keeps in
  #    registers (~1.7x the time, docs/BENCHMARKS.md). ggml refuses GGML_NATIVE with GGML_BACKEND_DL
  #    (its module's feature check is built from the GGML_<feature> options), so the options are those
  #    of the features /proc/cpuinfo lists, and -march=native gives the rest of a native build's code
  #    generation (tuning, the other extensions).
  cpu_flags=" $(awk -F': ' '/^flags/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true) "
  features=()
  has() { [[ "$cpu_flags" == *" $1 "* ]]; }
  has sse4_2 && features+=(-DGGML_SSE42=ON)
  has avx && features+=(-DGGML_AVX=ON)
  has avx2 && features+=(-DGGML_AVX2=ON)
  has bmi2 && features+=(-DGGML_BMI2=ON)
  has fma && features+=(-DGGML_FMA=ON)
  has f16c && features+=(-DGGML_F16C=ON)
  has avx_vnni && features+=(-DGGML_AVX_VNNI=ON)
  has avx512f && has avx512cd && has avx512vl && has avx512dq && has avx512bw && features+=(-DGGML_AVX512=ON)
  has avx512vbmi && features+=(-DGGML_AVX512_VBMI=ON)
  has avx512_vnni && features+=(-DGGML_AVX512_VNNI=ON)
  has avx512_bf16 && features+=(-DGGML_AVX512_BF16=ON)
  has amx_tile && features+=(-DGGML_AMX_TILE=ON)
  has amx_int8 && features+=(-DGGML_AMX_INT8=ON)
  has amx_bf16 && features+=(-DGGML_AMX_BF16=ON)
  log "configuring the CPU backend module (cmake ${generator[*]:-make}; ${features[*]:-no x86 features found})"
  nice -n "$niceness" cmake -S "$src" -B "$dir/build-cpu-backend" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON \
    -DGGML_BACKEND_DL=ON \
    -DGGML_NATIVE=OFF \
    "${features[@]}" \
    -DCMAKE_C_FLAGS=-march=native \
    -DCMAKE_CXX_FLAGS=-march=native \
    -DGGML_CCACHE=OFF \
    -DGGML_OPENMP=OFF \
    -DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON \
    -DCMAKE_SKIP_RPATH=ON \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_COMMIT="$commit" \
    >"$dir/configure-cpu-backend.log" 2>&1 || { log "cmake configure failed; see $dir/configure-cpu-backend.log"; tail -20 "$dir/configure-cpu-backend.log" >&2; exit 1; }
  log "building ggml-cpu with -j$jobs at nice $niceness"
  started=$(date +%s)
  nice -n "$niceness" cmake --build "$dir/build-cpu-backend" --config Release -j "$jobs" --target ggml-cpu \
    >"$dir/build-cpu-backend.log" 2>&1 || { log "build failed; see $dir/build-cpu-backend.log"; tail -30 "$dir/build-cpu-backend.log" >&2; exit 1; }
  module="$(find "$dir/build-cpu-backend" -type f -name 'libggml-cpu.so' | head -n 1)"
  [[ -n "$module" ]] || { log "built, but libggml-cpu.so is not in $dir/build-cpu-backend"; exit 1; }
  if command -v readelf >/dev/null; then
    dynamic="$(readelf -d "$module")"
    needed="$(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dynamic" | paste -sd, -)"
    if [[ ",$needed," != *",libggml-base.so,"* ]] || grep -qE '\((RPATH|RUNPATH)\)' <<<"$dynamic"; then
      log "refusing $module: it needs [$needed] with $(grep -cE '\((RPATH|RUNPATH)\)' <<<"$dynamic") rpath entries; it must need libggml-base.so and have no rpath"
      exit 1
    fi
  else
    needed=unknown
  fi
  rm -rf "$out.tmp"
  mkdir -p "$out.tmp"
  cp "$module" "$out.tmp/libggml-cpu.so"
  sha="$(sha256sum "$out.tmp/libggml-cpu.so" | awk '{ print $1 }')"
  # The flags of the CPU it was tuned for: the runner refuses the module on a CPU lacking any of them
  # (-march=native may use any; ggml's own feature check covers only the GGML_<feature> options).
  flags="$(echo $cpu_flags)"
  compiler="$(c++ --version | head -n 1)"
  json_str() { local v="${1//\\/\\\\}"; printf '"%s"' "${v//\"/\\\"}"; }
  {
    printf '{\n'
    printf '  "commit": %s,\n' "$(json_str "$commit")"
    printf '  "module": "libggml-cpu.so",\n'
    printf '  "sha256": %s,\n' "$(json_str "$sha")"
    printf '  "needed": %s,\n' "$(json_str "$needed")"
    printf '  "cpuFlags": %s,\n' "$(json_str "$flags")"
    printf '  "compiler": %s,\n' "$(json_str "$compiler")"
    printf '  "cmake": %s,\n' "$(json_str "BUILD_SHARED_LIBS=ON GGML_BACKEND_DL=ON GGML_OPENMP=OFF -march=native ${features[*]}")"
    printf '  "builtAt": %s\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '}\n'
  } >"$out.tmp/build.json"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  log "built in $(($(date +%s) - started)) s: $out"
  echo "$out"
  exit 0
fi

bin="$dir/bin$suffix"
stamp="$dir/.built$suffix"
if [[ -f "$stamp" && -x "$bin/llama-server" && -x "$bin/llama-batched-bench" ]]; then
  log "cached: $bin (llama.cpp $commit)"
  echo "$bin"
  exit 0
fi

if [[ "$cached_only" == "1" ]]; then
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

unpack_source

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
