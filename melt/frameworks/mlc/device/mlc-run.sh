#!/bin/sh
# melt's headless driver for MLC-LLM's chat CLI: one prompt, then /stats and
# /exit on the CLI's standard input, so no screen or keyboard is needed.
#
#   mlc-run CLI MODEL PROMPT MAX_GEN_LEN DEVICE
#
# MODEL is a compiled model folder, or a .tar of one (unpacked once beside it,
# so a content-addressed push of one file is enough).
cli=$1 model=$2 prompt=$3 maxlen=$4 device=$5
case $model in
*.tar)
    dir=${model%.tar}.d
    if [ ! -d "$dir" ]; then
        rm -rf "$dir.part" && mkdir -p "$dir.part" && tar -xf "$model" -C "$dir.part" && mv "$dir.part" "$dir" || exit 1
    fi
    model=$dir
    ;;
esac
# a script (no /bin/sh on Android to run it by its #! line) goes through sh
if [ "$(head -c 2 "$cli" 2>/dev/null)" = "#!" ]; then
    set -- sh "$cli"
else
    set -- "$cli"
fi
printf '%s\n/stats\n/exit\n' "$prompt" | "$@" --model "$model" --device "$device" --max-gen-len "$maxlen"
