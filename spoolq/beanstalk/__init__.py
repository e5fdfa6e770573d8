"""beanstalkd protocol front-end (see :mod:`spoolq.beanstalk.server` for the theory of operation).

``wire`` is the sans-IO protocol (bytes in, events out; replies to bytes),
``server`` owns the sockets and talks to the spool, ``standalone`` is the
``spoolq-beanstalkd`` entry point. This file imports nothing, so that the
entry point can listen before the heavy imports.
"""
