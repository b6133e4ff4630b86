"""ComVint: complex visual-reasoning instruction data from image annotations, on Apache Beam.

Also the ``--setup_file`` that Dataflow workers install the job's code with.
"""

import setuptools

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "openai[aiohttp]==3.51.0",
    "lxml==6.1.3",
    "fastavro==1.13.1",
    "google-cloud-storage==3.17.1",
    "google-cloud-secret-manager==2.32.0",  # --llm_api_key_secret, through Beam's GcpSecret
    "inflect==7.6.0",  # the offline engine's English: plurals, articles, number words
    "pyarrow>=16,<27",
    "jsonschema==4.26.0",
    "orjson==3.13.0",
    "msgspec==0.22.0",
    "numpy>=1.26,<2.5",  # MinHash signatures (already a Beam dependency; pinned to Beam's range)
    "pillow>=12.1.1,<13",  # pictures sent to the model: decode, downsize, JPEG (already a Beam dependency)
    "pyiceberg[sql-sqlite,pyarrow]==0.12.0",  # --lake iceberg: add_files commits, SQL/REST catalogs
    "deltalake==1.6.6",  # --lake delta: commits of add actions (delta-rs)
    "bpe-openai==0.1.4",  # the estimate's tokenizer: OpenAI's o200k/cl100k tables built in (tiktoken downloads them)
]

setuptools.setup(
    name="comvint",
    version="0.1.0",
    description="ComVint: synthesize, complicate, verify and reformulate visual reasoning instructions at scale",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["comvint", "comvint.*", "beam_pipeline", "beam_pipeline.*"]),
    package_data={
        "comvint": ["knowledge/*.json", "knowledge/*.json.gz", "knowledge/WORDNET_LICENSE", "report/assets/*"]
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": [
            "pytest==9.0.3",
            "pytest-timeout==2.4.0",
            "gcp-storage-emulator==2026.7.19",
            "ruff==0.17.5",
            "playwright==1.65.2",
            "polars==2.1.0",
            "datasets==5.2.0",
            "label-studio-sdk==2.1.2",
            # DuckDB reads the lake tables as users do; its extensions from PyPI (DuckDB would download them)
            "duckdb==1.4.4",
            "duckdb-ext-iceberg==1.4.4.20260205",
            "duckdb-ext-delta==1.4.4.20260205",
            "duckdb-ext-avro==1.4.4.20260205",
        ],
        "bench": ["datasketch==2.0.0", "psutil==7.2.2"],
    },
    entry_points={"console_scripts": ["comvint=beam_pipeline.main:main"]},
)
