"""What the tests run on, kept out of the shipped packages: the Kafka broker and worker-process
fixtures (``broker``, ``workers``: pytest plugins named in tests/conftest.py), the headless Chromium
driver of the live-page tests (``chromium``), the fuzz corpus of bad messages (``fuzz``) and the
reliability scenarios with their repeat runner (``reliability``: ``python -m tests.support.reliability``).
"""
