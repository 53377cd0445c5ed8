#!/usr/bin/env bash
# Not available yet: this script arrives with translation / XNLI support. It exits with an error
# rather than pretend to run. The data tools it will use already work: tools/tokenize.sh,
# tools/fastbpe, preprocess.py (see README.md).
echo "prepare-xnli.sh is not implemented yet in xlm; see README.md for what works today" >&2
exit 2
