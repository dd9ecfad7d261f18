"""What tests and bench/ share; no test module imports another, and bench/ imports only from here.

In memory (no sockets, no processes; time is a `twisted.internet.task.Clock`):
  web.py         the HTTP API through StubTreq over a real outbox (`Harness`), the broker played by the
                 test; fakes for the broker link's health and for spools that fail or wait
  http.py        raw HTTP to the API port's site over a StringTransport (`SiteHarness`), and a parser
  strategies.py  Hypothesis strategies for hostile and careless request bodies
  generator.py   a generator on a Clock with a real outbox, run for a while, and what it made
  detect.py      the platform's detection rules, written apart from auditgen/scenarios.py
  consistency.py a checker of what a Linux audit expert would call a contradiction across events,
                 written apart from the generator's world rules (auditgen/events/grounding.py)
  hygiene.py     what a test left on the reactor (conftest.py checks it after every test)

On the real reactor (sockets, processes, brokers; every wait has a deadline):
  waiting.py     the global reactor, `poll` and `wait_for`: wait on a condition with a deadline
  net.py         loopback host and free ports
  shared_broker.py  the shared RabbitMQ: a blocking client, fresh queues, draining a queue
  broker.py      a private RabbitMQ node to stop, restart or block (`PrivateBroker`)
  proxy.py       a TCP proxy that refuses and cuts connections on command
  twistd.py      `twistd -n auditgen` as a subprocess on free ports, and its probes (`Service`)
  load.py        clients posting events at a steady rate, keeping every 202's event_id (`Load`)
  tally.py       what reached the queue against what was accepted, by event_id (`Tally`, `Collector`)
  faults.py      the fault scenarios: service + private node + load + one fault + the tally
"""
