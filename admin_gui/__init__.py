"""The administrators' desktop console (PySide6): `sivr admin`, or `python -m admin_gui`.

Layout, in the spirit of Qt's model/view examples:
- `api_client`: HTTP calls per docs/API.md; every failure becomes an `ApiError` with words.
- `workers`: `TaskRunner`, which runs calls on a thread pool and answers in the GUI thread.
- `table_models`: a `QAbstractTableModel` per resource and the sorting/filtering proxy.
- `widgets`: banner, filterable table, form dialog, confirmation box.
- `form_checks`: pure checks the forms run before sending.
- `screens/`: one module per screen (login, institutions, users, record types, render nodes,
  node health, audit log); `main_window` holds them and the session (login, renewal, expiry).
- `style`: the look; `resources/`: desktop entry, icon.
"""
