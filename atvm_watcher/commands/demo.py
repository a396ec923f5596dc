"""``demo``: the main job on an embedded default, all on this machine.

A simulated categorized run (a real launcher process: a passing Linux group, then a failing
Windows group), a Mattermost-compatible receiver on 127.0.0.1, and the real watcher as a
subprocess between them. It prints the watcher's log lines and every post as it arrives.

The launcher and the receiver are development tools (atvm_dev/, beside this package in a checkout);
the release bundle leaves them out, so an installed watcher says the demo needs a checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Optional

from .. import preview
from ..settings import PACKAGE_ROOT
from ..vocab import ExitCode

BUILD = "e2e-redhat9.6-ubuntu24.04-w2k25-fc-demo{pid}"
REQUEST = ["--categorize", "--groups", "2", "--template", "atvm-migration-template-v3",
           "--config-family", "rhel-ubuntu-windows", "--migration-style", "live",
           "--integration-plugin", "cdc-plugin-12.17.4",
           "--scope-description", "Demo: replicate and cut over a Linux group, then a Windows group"]


def demo_env(tmp: Path, webhook: str, speed: float) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATVM_", "MATTERMOST_"))}
    env.update({
        "ATVM_WATCHER_ENV_FILE": str(tmp / "no-env-file"),  # the demo never reads /etc
        "ATVM_WATCHER_STATE_ROOT": str(tmp / "state"),
        "ATVM_AUTOMATION_ROOT": str(tmp / "automation"),
        "ATVM_REPORT_DIR": str(tmp / "reports"),
        "ATVM_LOG_DIR": str(tmp / "log"),
        "MATTERMOST_ATVM_WEBHOOK": webhook,
        "MATTERMOST_ATVM_CHANNEL": "atvm-demo",
        "ATVM_POLL_SECONDS": "0.25",
        "ATVM_SETTLE_SECONDS": str(0.5 / speed),
        "ATVM_GONE_GRACE_SECONDS": str(3 / speed),
        "ATVM_START_TIMEOUT_SECONDS": "60",
        "ATVM_HUNG_AFTER_SECONDS": "120",
        # A link in each post, as a CI server publishing the HTML reports would give (not a real one)
        "ATVM_REPORT_URL": "https://reports.example.invalid/atvm/{build}/{group}/mochawesome.html",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def show_post(n: int, post: dict) -> None:
    print(f"\n=== Mattermost post #{n} (channel {post.get('channel', '-')}) ===")
    print(f"  {post.get('text', '')}")
    for att in post.get("attachments") or []:
        link = f" <{att['title_link']}>" if att.get("title_link") else ""
        print(f"  [{att.get('color')}] {att.get('title')}{link}")
        for f in att.get("fields") or []:
            value = str(f.get("value", "")).replace("\n", "\n      ")
            print(f"    {f.get('title')}: {value}")
    print("=" * 40, flush=True)


def follow_posts(receiver, done: threading.Event, shown: List[int]) -> None:
    while not done.is_set() or len(receiver.posts) > shown[0]:
        if receiver.wait_for_posts(shown[0] + 1, timeout=0.2):
            shown[0] += 1
            show_post(shown[0], receiver.posts[shown[0] - 1])


def write_previews(folder: Path, posts: List[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, post in enumerate(posts, start=1):
        (folder / f"post-{n}.html").write_text(preview.page([post], f"demo post {n}"), encoding="utf-8")
    print(f"demo: {len(posts)} post(s) laid out as Mattermost shows them: {folder}/post-N.html")


def run(speed: float = 1.0, keep: bool = False, preview_dir: Optional[str] = None) -> int:
    try:
        from atvm_dev.receiver import MattermostDouble
    except ModuleNotFoundError as exc:
        if exc.name != "atvm_dev":
            raise
        print("error: demo needs a checkout of the atvm-watcher repository: its simulated launcher and receiver "
              "(atvm_dev/) are development tools, not part of an installed bundle", file=sys.stderr)
        return ExitCode.USAGE
    speed = max(0.1, min(speed, 20.0))
    tmp = Path(tempfile.mkdtemp(prefix="atvm-demo-"))
    build = BUILD.format(pid=os.getpid())
    py = sys.executable or "python3"
    with MattermostDouble() as receiver:
        env = demo_env(tmp, receiver.url, speed)
        print(f"demo: build {build}\ndemo: Mattermost-compatible receiver on 127.0.0.1:{receiver.port}\n"
              f"demo: evidence under {tmp}\n", flush=True)
        launcher = subprocess.Popen(
            [py, str(PACKAGE_ROOT / "atvm_dev" / "simulate.py"), "--build-name", build,
             "--log-dir", env["ATVM_LOG_DIR"], "--report-dir", env["ATVM_REPORT_DIR"],
             "--group", "linux:pass", "--group", "windows:fail", "--flaky", "--step-seconds", str(1.2 / speed)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done, shown = threading.Event(), [0]
        printer = threading.Thread(target=follow_posts, args=(receiver, done, shown), daemon=True)
        printer.start()
        watcher = subprocess.run([py, str(PACKAGE_ROOT / "atvm_run_watcher.py"), "watch", "--build-name", build]
                                 + REQUEST, env=env, stderr=None, stdout=None, check=False)
        done.set()
        printer.join(timeout=5)
        launcher.wait(timeout=30)
        print(f"\ndemo: watcher exited {watcher.returncode}; {shown[0]} post(s) received "
              f"(expected 2: linux COMPLETED, windows FAILED)")
        subprocess.run([py, str(PACKAGE_ROOT / "atvm_run_watcher.py"), "status"], env=env, check=False)
        if preview_dir:
            write_previews(Path(preview_dir), list(receiver.posts))
    if keep:
        print(f"demo: files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if watcher.returncode == 0 and shown[0] == 2 else 1
