#!/bin/sh
# The benchmark host app's contract, for the fake iPhone: `--melt-out DIR --
# ARGS...` runs llama-bench with ARGS (paths relative to Documents, the
# working folder), writes DIR/stdout.txt, DIR/stderr.txt and DIR/exit_code
# last. The real app (frameworks/llama.cpp/ios/) does the same in-process.
# The test writes this machine's llama-bench path in place of the variable.
out=
while [ $# -gt 0 ]; do
    case $1 in
    --melt-out) out=$2; shift 2 ;;
    --) shift; break ;;
    *) shift ;;
    esac
done
mkdir -p "$out"
"$MELT_TEST_LLAMA_BENCH" "$@" >"$out/stdout.txt" 2>"$out/stderr.txt"
echo $? >"$out/exit_code.tmp" && mv "$out/exit_code.tmp" "$out/exit_code"
