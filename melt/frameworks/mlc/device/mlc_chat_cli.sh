#!/bin/sh
# NOT MLC-LLM. A stand-in for MLC's chat CLI, used where MLC cannot be built:
# it speaks the CLI's stdin protocol (a prompt a line, /stats, /reset, /exit)
# and prints MLC's own output format, but the work behind it is real:
# llama.cpp's llama-completion (beside this file) generating on a GGUF model.
# Its rates are llama.cpp's, printed with one decimal as MLC prints them.
# melt marks every result from it `stand-in` and simulated.
here=${0%/*}
model= device=auto maxlen=64
while [ $# -gt 0 ]; do
    case $1 in
    --model) model=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --max-gen-len) maxlen=$2; shift 2 ;;
    *) shift ;;
    esac
done
if [ ! -f "$model" ]; then
    echo "Cannot find model: $model" >&2
    exit 1
fi

rate() {  # "... ( 2.47 ms per token,   405.19 tokens per second)" -> 405.1
    r=${1%% tokens per second*}
    r=${r##*,}
    set -- $r
    r=$1
    case $r in
    *.*) f=${r#*.}; f=${f%"${f#?}"}; r=${r%%.*}.$f ;;
    esac
    echo "$r"
}

echo "Use MLC config: \"$model\" (stand-in: llama.cpp llama-completion, device $device)"
echo "Loading model..."
echo "Loading finished"
echo "Running system prompts..."
echo "System prompts finished"
log=$here/.mlc-standin.$$.log
prefill= decode=
while IFS= read -r line; do
    case $line in
    /exit) break ;;
    /reset) prefill= decode= ;;
    /stats)
        echo "[INST]: /stats"
        [ -n "$decode" ] && echo "prefill: $prefill tok/s, decode: $decode tok/s"
        ;;
    *)
        echo "[INST]: $line"
        reply=$("$here/llama-completion" -m "$model" -p "$line" -n "$maxlen" --ignore-eos -no-cnv \
            --no-display-prompt --simple-io --log-colors off -t "${MLC_STANDIN_THREADS:-1}" 2>"$log")
        status=$?
        if [ $status -ne 0 ]; then
            cat "$log" >&2
            rm -f "$log"
            exit $status
        fi
        echo "[/INST]: $reply"
        while IFS= read -r t; do
            case $t in
            *"prompt eval time"*"tokens per second"*) prefill=$(rate "$t") ;;
            *" eval time"*"tokens per second"*) decode=$(rate "$t") ;;
            esac
        done <"$log"
        rm -f "$log"
        ;;
    esac
done
