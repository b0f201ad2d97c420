"""The node's store: every instance kept encrypted and bit-exact, with the manifest of its series.

One interface (`interface.Store`) over two backends, the node's own folder (`local`) and a bucket
shared by an institution's nodes (`s3`, with its envelope encryption and a local blob cache), plus
the typed manifest a record is stored with. Separate because it is the truth everything else is
derived from, and because the other layers import it where numba and the codecs may not load.
"""
