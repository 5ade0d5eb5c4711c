"""The trajectory viewer on a multi-agent episode: the row's agent is named in its
colour, and the team transcript shows each agent's messages in its own colour with the
hand-offs between agents marked."""

from __future__ import annotations

from html.parser import HTMLParser

from agentic_rl.train.viewer import agent_colours, render_html, trajectory_record

META = {"task_id": "t0", "episode_id": "g0s0", "return": 1.5, "success": True,
        "termination": "done", "num_turns": 2, "agent": "checker",
        "messages": [{"role": "user", "content": "Task: q"},
                     {"role": "assistant", "content": "wrong"}],
        "info": {"transcript": [{"agent": "writer", "text": "SELECT 1"},
                                {"agent": "checker", "text": "wrong"},
                                {"agent": "writer", "text": "SELECT 2"}]}}


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.badges, self.said, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class") == "agent":
            self.badges.append((a["data-agent"], a["style"]))
        if a.get("class") == "said":
            self.said.append(a["style"])

    def handle_data(self, data):
        self.text.append(data)


def test_multi_agent_episode_is_coloured_with_hand_offs():
    rec = trajectory_record(META, step=3, kind="train", turn_rewards=[0.5, 1.0])
    assert rec["agent"] == "checker" and len(rec["transcript"]) == 3
    page = Collect()
    page.feed(render_html([rec], "t"))
    colours = agent_colours([rec])
    agent_colour = colours.__getitem__
    # the head names the row's agent, then the transcript's three speakers
    assert [b[0] for b in page.badges] == ["checker", "writer", "checker", "writer"]
    for name, style in page.badges:
        assert agent_colour(name) in style
    assert page.said == [f"border-color:{agent_colour(n)}" for n in
                         ("writer", "checker", "writer")]
    text = "".join(page.text)
    assert text.count("hand-off:") == 2
    assert "writer → checker" in text and "checker → writer" in text
    assert agent_colour("writer") != agent_colour("checker")


def test_single_agent_episode_has_no_team_section():
    meta = {k: v for k, v in META.items() if k not in ("agent", "info")}
    html = render_html([trajectory_record(meta, step=1, kind="eval")], "t")
    assert "team transcript" not in html and 'class="agent"' not in html
