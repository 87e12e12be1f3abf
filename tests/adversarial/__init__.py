"""The adversarial suite: a hostile central, a hostile LAN, a careless operator.

Each test here reproduces one attack or mistake against the real thing where one exists (lab
Asterisk, real git, the real daemon as a subprocess) and checks that synch keeps serving and
loses nothing.
"""
