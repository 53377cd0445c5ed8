from setuptools import find_packages, setup

setup(
    name="xlm",
    version="0.1.0",
    description="Cross-lingual language model pretraining (XLM), reimplemented on current PyTorch",
    packages=find_packages(include=["xlm", "xlm.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.6,<3",  # 2.6: safe_globals takes (function, name) pairs, which checkpoint loading uses
        "numpy>=1.23",
        "sacremoses>=0.1,<0.3",  # xlm/data/tokenize.py replaces some of its rules by name (tested with 0.2)
        "regex",  # Perl's Unicode properties in those rules (sacremoses needs it too)
        "sacrebleu>=2.3",
        "tqdm>=4.60",
        # torch's torchrun imports it on Python 3.9 without asking for it (torch 2.6-2.8, the last for 3.9)
        "importlib_metadata; python_version < '3.10'",
    ],
    extras_require={
        "zh": ["jieba>=0.42"],
        "th": ["pythainlp>=4.0"],
        "ja": ["fugashi>=1.2", "unidic-lite>=1.0"],
        "hf": ["transformers>=4.40"],
        "plot": ["matplotlib>=3.5"],
        "wiki": ["wikiextractor>=3.1"],
        # subword-nmt: an independent oracle for the BPE tests
        "test": ["pytest>=7", "transformers>=4.40", "matplotlib>=3.5", "scikit-learn>=1.0", "scipy>=1.7",
                 "wikiextractor>=3.1", "subword-nmt>=0.3.8,<0.4"],
    },
    scripts=["tools/fastbpe"],
)
