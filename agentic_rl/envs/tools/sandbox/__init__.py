"""The sandboxed, stateful Python interpreter behind the `python` tool.

sandbox (CodeSandbox, SandboxLimits, python_tool: the host side), _worker (the worker
process, run as a script by path: stdlib only, never imports agentic_rl), channel (the
framed socket protocol between them), cgroup (cgroup v2 limits), system (namespaces,
mounts, probing what the host allows).

Imports: stdlib and agentic_rl.envs.tools.base only; never jax.
"""
