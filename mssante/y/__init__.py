"""Y deliveries: HL7 v2 intake of CDA documents, fanned out to the DMP and MSSanté (SPECS.md §4).

Everything in this package is a pure protocol core: no sockets, no asyncio, no database, no
clock (time is a parameter). The MLLP listener, the Y delivery tables and the mail legs are
built on top of `mssante.y.intake.decide`.
"""
