"""`synch status` in sentences, for a person at the branch: GetDetails → a few lines.

Pure: the daemon's GetDetails reply (a dict) in, text out. Every value may be missing or null
(an older daemon, a daemon that has not probed or synced yet): nothing here prints `None`.
"""

from __future__ import annotations

from datetime import datetime

STAMP = "%Y%m%d%H%M%S"  # the status socket's timestamps (synch.timestamps)


def describe(details: dict[str, object]) -> list[str]:
    """The lines `synch status` prints: the state of things, then what needs attention."""
    now = _when(details.get("Timestamp")) or datetime.now()
    lines = [
        _central(details, now),
        _phones(details, now),
        _last_sync(details, now),
    ]
    branch = details.get("BranchReachable")
    if branch is True:
        lines.append("The branch Asterisk answers AMI.")
    mirror = _mirror(details.get("ContactMirror"), now)
    if mirror:
        lines.append(mirror)
    attention = _attention(details)
    if attention:
        lines.append("")
        lines.append("Needs attention:")
        lines += [f"- {item}" for item in attention]
    version, uptime = details.get("Version"), details.get("Uptime")
    tail = f"synch {version}" if version else "synch"
    if isinstance(uptime, int):
        tail += f", running for {_duration(uptime)}"
    lines += ["", tail + "."]
    return lines


def _mirror(mirror: object, now: datetime) -> str:
    """Contact mirroring: how many phones the branch can call at once, and whether it does."""
    if not isinstance(mirror, dict):
        return ""
    phones = mirror.get("Phones")
    if not isinstance(phones, int):
        return ""
    known = "1 phone" if phones == 1 else f"{phones} phones"
    learned = _when(mirror.get("Learned"))
    when = f", learned {_duration((now - learned).total_seconds())} ago" if learned else ""
    if mirror.get("Active"):
        return f"The branch calls {known} at their contacts known at the central{when}."
    return f"The branch knows the contacts of {known} at the central{when}, for a failover."


def _central(details: dict[str, object], now: datetime) -> str:
    monitor = details.get("Monitor")
    since = _since(details.get("MonitorSince"), now)
    last = details.get("LastProbe")
    error = last.get("Error") if isinstance(last, dict) else None
    outage = details.get("Outage")
    if monitor == "Stable":
        if outage == "ami" and details.get("OutageText"):
            return f"The central PBX answers the phones{since}, but {details['OutageText']}."
        return f"The central PBX answers{since}."
    if monitor == "Failed":
        why = f" (last probe: {error})" if error else ""
        text = f"The central PBX does not answer{since}{why}."
        if outage in ("central", "uplink") and details.get("OutageText"):
            text += f" Diagnosis: {details['OutageText']}."
        return text
    if monitor == "Unstable":
        why = f"; last probe: {error}" if error else ""
        return f"The central PBX answers intermittently{since}{why}."
    return "The central PBX has not been probed yet."


def _phones(details: dict[str, object], now: datetime) -> str:
    service, target, name = details.get("Service"), details.get("DnsTarget"), details.get("DnsName")
    since = _since(details.get("ServiceSince"), now)
    where = f" ({name} resolves to {target})" if name and target else ""
    if service == "Failover":
        text = f"Phones are sent to this branch{where}{since}."
    elif service in ("Normal", "Init"):
        text = f"Phones are sent to the central PBX{where}{since}."
    else:
        return "Where the phones are sent is not known yet."
    if details.get("Forced"):
        text += " An admin forced this."
    elif service == "Failover":
        text += _fallback_held(details.get("FallbackHeld"))
    return text


def _fallback_held(held: object) -> str:
    """The fallback waiting for the branch's calls, as a sentence (with a leading space)."""
    if not isinstance(held, dict):
        return ""
    calls, until = held.get("Calls"), _when(held.get("Until"))
    since = _when(held.get("Since"))
    if isinstance(calls, int) and calls > 1:
        what = f"its {calls} calls end"
    elif calls == 1:
        what = "its call ends"
    else:
        what = "its calls end"
    bound = []
    if since and until:
        bound.append(f"at most {_duration((until - since).total_seconds())}")
    if until:
        bound.append(f"until {until:%H:%M:%S}")
    limit = f" ({', '.join(bound)})" if bound else ""
    return f" The central answers again; phones stay at the branch until {what}{limit}."


def _last_sync(details: dict[str, object], now: datetime) -> str:
    last = details.get("LastSync")
    if not isinstance(last, dict) or not last.get("Result"):
        return "No sync has run yet."
    result = str(last["Result"])
    when = _when(last.get("Timestamp"))
    ago = f" {_duration((now - when).total_seconds())} ago" if when else ""
    facts = []
    change = last.get("Change")
    if result == "applied" and change:
        facts.append(str(change))
    if isinstance(last.get("Accounts"), int):
        facts.append(f"{last['Accounts']} accounts")
    if last.get("Commit"):
        facts.append(f"commit {str(last['Commit'])[:10]}")
    text = f"Last sync{ago}: {result}"
    if result in ("failed", "guarded") and last.get("Reason"):
        text += f": {last['Reason']}"
    return text + (f" ({', '.join(facts)})" if facts else "") + "." + _next_sync(details)


def _next_sync(details: dict[str, object]) -> str:
    """A retry after failures of the central, or the sync planned after its return."""
    plan, retry = details.get("NextSync"), details.get("SyncRetry")
    if not isinstance(plan, dict) or not isinstance(plan.get("In"), int | float):
        return ""
    wait = _duration(float(plan["In"]))
    if plan.get("Why") == "retry" and isinstance(retry, dict):
        failures = retry.get("Failures")
        what = f"the last {failures} syncs" if isinstance(failures, int) and failures > 1 else "it"
        return f" The central failed {what}: next try in {wait}."
    if plan.get("Why") == "central back":
        return f" The central is back: next sync in {wait}."
    return ""


def _attention(details: dict[str, object]) -> list[str]:
    items = []
    last = details.get("LastSync")
    result = last.get("Result") if isinstance(last, dict) else None
    if result == "guarded":
        items.append(
            "the remove guard refused the last sync; if the change is intended, run "
            "`synch sync --force` once"
        )
    elif result == "failed":
        items.append("the last sync failed; the branch keeps its previous accounts")
    blocked = details.get("SyncBlocked")
    if blocked and not details.get("SyncPaused") and details.get("Monitor") == "Stable":
        items.append(f"no sync can run now: {blocked}")
    paused = details.get("SyncPaused")
    if paused:
        items.append(f"automatic sync is paused ({paused}); `synch resume` continues it")
    if details.get("Forced"):
        items.append(
            f"the service is forced to {details.get('Service') or 'a state'} by an admin; "
            "`Auto` returns it to the probes"
        )
    budget = details.get("FailoverBudget")
    if isinstance(budget, dict) and budget.get("OverTarget"):
        items.append(_over_budget(budget))
    if details.get("BranchReachable") is False:
        items.append("the branch Asterisk does not answer AMI: failover would not help the phones")
    return items


def _over_budget(budget: dict[str, object]) -> str:
    seconds, target = budget.get("Seconds"), budget.get("Target")
    text = "after a WAN cut or a central failure, a phone may be unreachable"
    if isinstance(seconds, int | float):
        text += f" for up to {_duration(seconds)}"
    if isinstance(target, int | float):
        text += f", more than the {_duration(target)} of probemonitor.failoverbudgettarget"
    advice = budget.get("Advice")
    return text + (f": {advice}" if advice else "") + " (`synch check-config` shows every term)"


def _when(stamp: object) -> datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.strptime(stamp, STAMP)
    except ValueError:
        return None


def _since(stamp: object, now: datetime) -> str:
    when = _when(stamp)
    if when is None:
        return ""
    return f" since {when:%Y-%m-%d %H:%M:%S} ({_duration((now - when).total_seconds())})"


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 4 min`, `2 d 5 h`."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
