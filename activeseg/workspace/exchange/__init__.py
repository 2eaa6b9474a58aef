"""The label exchange: a round's request out to the annotators, their label batches in.

- :mod:`.layout`: where everything lies in the object store; :mod:`.images`: crops, masks, outlines as PNG.
- :mod:`.requests` and :mod:`.request_docs`: the published request (crops, previews, manifest,
  instructions, schema).
- :mod:`.batches`: a batch read whole, hashed, staged write-once, quarantined.
- :mod:`.intake`: submit or ingest (validated whole, staged or quarantined), approve, reject, refuse;
  :mod:`.controls`: at approval, the round's control regions scored with the model that queried;
  :mod:`.revocation`: take accepted labels back.
- :mod:`.formats`: QuPath, CVAT and Label Studio exports and imports, and the live Label Studio loop.

It sits between the workspace's core (:class:`activeseg.workspace.base.WorkspaceCore`, records, ledger,
store, validation, state), which it uses, and the workspace's steps and facade, which use it: the import
contract ``workspace-exchange`` in pyproject.toml says so.
"""
