#!/usr/bin/env python
"""translation: not available yet.

The data pipeline (tokenization, BPE, vocabulary, binarization, batching) is done; this script arrives
with the model and trainer. It exits with an error rather than pretend to run.
"""
import sys

sys.exit("translate.py: translation is not implemented yet in xlm; see README.md for what works today")
