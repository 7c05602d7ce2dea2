"""Packaging for drlbox: deep reinforcement learning as a black box."""
from setuptools import find_packages, setup

setup(
    name="drlbox",
    version="0.1.0",
    description="Deep reinforcement learning as a black box: A3C, ACER, IMPALA and DQN "
                "as gRPC roles, on one machine or a cluster.",
    python_requires=">=3.11",
    packages=find_packages(include=["drlbox", "drlbox.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "gymnasium>=1.0",
        "numpy>=1.26",
        "ml_dtypes>=0.3",         # bfloat16 for compress_gradients (TensorFlow needs it too)
        "grpcio>=1.60",
        "grpcio-health-checking>=1.60",
        "protobuf>=7.35.1,<8",
        "cloudpickle>=3",
        "tqdm>=4.60",
        "tensorboard>=2.16",      # tf.summary scalars; TensorFlow no longer installs it
        "setproctitle>=1.3",      # forked roles show their own command line in ps
        "prometheus-client>=0.26",    # each role's /metrics (drlbox.metrics)
    ],
    entry_points={"console_scripts": ["drlbox=drlbox.cli:main"]},
    extras_require={
        "atari": ["ale-py>=0.10", "opencv-python-headless>=4.8"],
        "dev": ["pytest>=8", "pytest-timeout>=2", "grpcio-tools==1.85.1", "pyyaml>=6",
                "kubernetes-validate>=1.30"],
        "bench": ["torch==2.13.0", "stable-baselines3==2.9.2", "matplotlib>=3.7"],
        "plot": ["matplotlib>=3.7"],
    },
)
