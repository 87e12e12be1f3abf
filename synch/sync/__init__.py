"""Account sync: the pure steps (model, filter, render, plan) and the job that runs them.

model: GetConfig reply / .conf text → ConfigFile; filter: which accounts are the branch's;
render: ConfigFile → safe, deterministic text; plan: per-account diff, remove guard, git subject.
"""
