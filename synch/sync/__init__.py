"""Account sync: the pure steps and the job that runs them.

model: ConfigFile, ordered data; getconfig / conftext: a GetConfig reply / a .conf text →
ConfigFile; filter: which accounts are the branch's; policy: what a central value may say;
render: ConfigFile → safe, deterministic text; plan: per-account diff, remove guard, git
subject; stages: the interface of extra steps (the dialplan); outcome: what a cycle ended with.
job: one cycle, deciding; fetch: the central's side; store: the branch's side (lock, crash-safe
writes, history); rollback: `synch rollback`.
"""
