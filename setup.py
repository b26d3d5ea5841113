"""Installable package for the endpoint-telemetry sanitizer.

`pip install .` provides the `pipeline`, `transforms` and `schemas` packages;
`pip install .[test]` adds what the test suite needs.
"""

from setuptools import setup

setup(
    name="telemetry-sanitizer",
    version="0.1.0",
    description="Apache Beam pipeline that makes an endpoint-security privacy policy true for telemetry.",
    python_requires=">=3.11",
    packages=["pipeline", "transforms", "schemas"],
    # every data file the packages read at run time (policy, rule sets) and the typing marker;
    # tests/test_wheel.py fails when a file of a package is missing from the wheel
    package_data={package: ["py.typed", "*.toml", "*.json", "*.txt", "*.yaml", "*.yml", "formats/*.toml"]
                  for package in ("pipeline", "transforms", "schemas")},
    install_requires=[
        "apache-beam>=2.60,<3",
        "pyarrow>=14,<23",
        "orjson>=3.9,<4",
        "tldextract>=5,<6",
        "deltalake>=1.1,<2",
        "tqdm>=4.60,<5",
        "google-re2>=1.1,<2",
        "obstore>=0.6,<1",  # leases on S3 outputs: conditional puts (pipeline/store_lease.py)
        "fsspec>=2024.2",  # Azure outputs: obstore's fsspec adapter as pyarrow's file system (pipeline/location.py)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "ruff>=0.6",
            "duckdb>=1.0,<2",
            "polars>=1.0,<3",
            "pandas>=2,<3",
            "dask[distributed]>=2024.4.2,<2027",
            "mypy>=1.10,<3",
            "setuptools>=68",  # tests/test_wheel.py builds the wheel without an isolated build env
            "wheel>=0.40",
            "moto[server]>=5.0.20,<6",  # tests/test_object_store.py: a local S3 emulator
        ],
        "dask": ["dask[distributed]>=2024.4.2,<2027"],
    },
    entry_points={"console_scripts": ["telemetry-sanitizer=pipeline.__main__:main"]},
)
