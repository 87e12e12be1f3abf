"""The lab that synch's tests, benchmarks and `make demo` run against: real Asterisk 22 in a
cached Debian sid chroot (`chroot`, `asterisk`), a local dnsmasq (`dnsmasq`), network
namespaces (`netns`), sipp phones and calls (`sipp`, `phones`), the three-namespace failover
bed (`testbed`), `synch run` as a subprocess (`synchproc`), sample central configurations
(`samples`) and free ports (`ports`).

    python -m lab build          # build (or check) the Asterisk chroot
    python -m lab start-sample   # a central with the sample users, until Ctrl-C
    python -m lab clean          # what killed runs left behind
    python -m lab.demo           # `make demo`
"""
