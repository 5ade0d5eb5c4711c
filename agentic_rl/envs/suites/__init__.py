"""One module per environment family: its env class, task generation and registered suites.

math (calculator, gsm8k), guess_number, code (python_code), search (search_qa),
mixed (search_calc), sql (text2sql; generated databases in sql_data), web
(web_search_extract: a generated website over real local HTTP), mcp_tasks (mcp: tasks
generated from any MCP server's tools, answered with them), and the long-horizon
gridworld (gridworld, gridworld_sparse), fs_investigation and signal_walk (a corridor
walked one character per turn, for tiny models). Importing this
package registers every suite in `agentic_rl.envs.suite.ENVS` (done by `suite.py`).

Imports: stdlib and agentic_rl.envs only; never jax.
"""

from agentic_rl.envs.suites import (  # noqa: F401 - registers the suites
    code,
    fs_investigation,
    gridworld,
    guess_number,
    math,
    mcp_tasks,
    mixed,
    search,
    signal_walk,
    sql,
    web,
)
