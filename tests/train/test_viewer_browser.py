"""The trajectory page in a real headless browser (Debian's Chromium driven by
Playwright): what a user sees for an episode with worked examples in the prompt, a
multi-turn tool episode and a multi-agent row. Turn labels, rewards and advantages sit
on the policy's turns, the prompt is collapsed until opened, the filter works.

Chromium comes from `scripts/install_system_packages.sh` (run by the README's test
command). Without it the test skips on a developer's machine and fails in CI."""

from __future__ import annotations

import os
import shutil

import pytest

from agentic_rl.train import viewer
from tests.train.viewer_episodes import DEMOS, page_records


def _chromium() -> str:
    for name in (os.environ.get("AGENTIC_RL_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    msg = "no chromium on PATH: run `bash scripts/install_system_packages.sh` (as root)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (the `test` extra has it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


def test_viewer_in_a_real_browser(browser, tmp_path):
    records = page_records()
    path = viewer.save_trajectories(tmp_path, 6, records)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    eps = page.locator(".ep")
    assert eps.count() == 3
    assert page.inner_text("#count") == "showing 3 of 3 episodes"  # filled in by the script

    # the calculator episode: prompt collapsed, the policy's two turns labelled
    ep = eps.nth(0)
    summary = ep.locator("details.prompt > summary")
    assert summary.inner_text() == (f"prompt · {2 + 4 * DEMOS} messages: system, "
                                    f"{DEMOS} worked examples, task")
    demos = ep.locator("details.prompt [data-origin=prompt]")
    assert demos.count() == 2 + 4 * DEMOS and not demos.nth(2).is_visible()
    rewards = records[0]["turn_rewards"]
    labels = ep.locator("[data-origin=policy] .turn").all_inner_texts()
    assert labels == [f"turn 1 of 2 · reward {rewards[0]:+.3f} · advantage +0.500",
                      f"turn 2 of 2 · reward {rewards[1]:+.3f} · advantage -0.250"]
    turn1 = ep.locator("[data-origin=policy][data-turn='0']")
    assert turn1.locator(".calls").inner_text().startswith("tool calls: [{\"name\": "
                                                           "\"calculator\"")
    assert ep.locator("[data-origin=policy][data-turn='1'] .calls").count() == 0
    obs = ep.locator("[data-origin=environment]")
    assert obs.count() == 1 and obs.locator(".turn").inner_text() == "observation after turn 1"
    # drawn in order: the prompt box, turn 1, its observation, turn 2
    ys = [summary.bounding_box()["y"], turn1.bounding_box()["y"], obs.bounding_box()["y"],
          ep.locator("[data-turn='1'][data-origin=policy]").bounding_box()["y"]]
    assert ys == sorted(ys)
    summary.click()  # opening the prompt shows the worked examples, labelled as such
    assert demos.nth(2).is_visible()
    assert demos.nth(2).locator(".role").inner_text() == "assistant (worked example)"
    assert demos.nth(2).locator(".turn").count() == 0

    # the eval row: its rollout's rewards on its turns, no advantages
    assert eps.nth(1).locator("[data-origin=policy] .turn").all_inner_texts() == [
        f"turn 1 of 2 · reward {rewards[0]:+.3f}", f"turn 2 of 2 · reward {rewards[1]:+.3f}"]

    # the multi-agent row: its agent badge, the team transcript with the hand-off
    team = eps.nth(2)
    assert team.locator(".head .agent").inner_text() == "checker"
    assert team.locator(".said .agent").all_inner_texts() == ["writer", "checker"]
    assert team.locator(".handoff").inner_text() == "hand-off: writer → checker"
    assert team.locator("[data-origin=policy] .turn").inner_text() == (
        "turn 1 of 1 · reward +1.000 · advantage +0.750")

    # the filter follows the URL hash; "expand prompts" opens every prompt
    page.goto(path.as_uri() + "#failure")
    assert page.inner_text("#count") == "showing 1 of 3 episodes"
    assert [eps.nth(i).is_visible() for i in range(3)] == [False, True, False]
    page.goto(path.as_uri() + "#train")
    assert [eps.nth(i).is_visible() for i in range(3)] == [True, False, True]
    page.goto(path.as_uri() + "#all")
    page.get_by_label("expand prompts").check()
    assert page.locator("details.prompt[open]").count() == 3
    shot = page.screenshot(full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    assert not errors
