# conftest.py of a port's own repository: the whole parity suite for the port (configured in pyproject.toml).
pytest_plugins = ["parity.pytest_plugin"]  # not needed once ptycho-parity is pip-installed (entry point)
