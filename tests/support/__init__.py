"""What the tests share, so each helper is written once and fixed once.

- ``cli``: the installed ``agentparallels`` command run as a user runs it (sync, async, or a
  process left running), with the test server's address and the test's cache and state.
- ``fake_model``: the ``fake`` fixture, a scripted ``FakeLLM`` on loopback.
- ``ports``: a free TCP port on loopback.
- ``repos``: real git repositories, their exact state, and starting jobs on them.
- ``workers``, ``s3``, ``history_text``, ``rollback_audit``: worker processes, the S3 store,
  histories as text, and rollbacks watched step by step.
"""
