"""Account sync: the pure steps (model and its parsers, filter, render, plan) and the job that
runs them.

model: ConfigFile, ordered data; getconfig / conftext: a GetConfig reply / a .conf text →
ConfigFile; filter: which accounts are the branch's; render: ConfigFile → safe, deterministic
text; plan: per-account diff, remove guard, git subject.
"""
