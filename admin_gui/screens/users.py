"""Users: create, edit (name, email, role, institution), deactivate, reset password, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from admin_gui.api_client import INSTITUTION_KEYS
from admin_gui.context import ConsoleContext
from admin_gui.form_checks import (
    check_email,
    check_new_password,
    check_required,
    check_username,
)
from admin_gui.screens.base import TableScreen
from admin_gui.server_text import one_line
from admin_gui.table_models import UsersModel
from admin_gui.widgets import FormDialog, confirm
from shared.roles import (
    PHYSICIAN,
    ROLE_LABELS,
    assignable_roles,
    may_administer_institution,
    may_administer_user,
)

#: What the server refuses on the signed-in administrator's own row (409, daemons/toplevel/users.py),
#: said on the row's Deactivate button and on the fields of its edit form
OWN_ACTIVE_REFUSAL = "You cannot deactivate your own account; another administrator can."
OWN_ROLE_REFUSAL = "You cannot change your own role; another administrator can."


class PasswordPolicy(NamedTuple):
    """The lengths a new password must have on the toplevel (`GET /api/v1/me/password-policy`)."""

    min_length: int
    max_length: int


def password_policy_of(answer: Any) -> PasswordPolicy | None:
    """The policy a server's answer names; None for one that does not name both lengths sanely
    (1 <= min_length <= max_length): the server's own refusal then says them."""
    low, high = (_whole(answer.get(key)) if isinstance(answer, dict) else None for key in ("min_length", "max_length"))
    return PasswordPolicy(low, high) if low is not None and high is not None and 1 <= low <= high else None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def length_hint(policy: PasswordPolicy | None) -> str:
    return f"at least {policy.min_length} characters" if policy is not None else ""


def check_password(values: dict[str, Any], policy: PasswordPolicy | None) -> str | None:
    """The new password of a form (`password`, repeated in `password2`) under the server's policy."""
    lengths = (policy.min_length, policy.max_length) if policy is not None else (None, None)
    return check_new_password(values["password"], values["password2"], *lengths)


def check_user(values: dict[str, Any], new: bool, policy: PasswordPolicy | None = None) -> dict[str, str]:
    problems = {
        "full_name": check_required(values["full_name"], "Full name"),
        "email": check_email(values.get("email", "")),
    }
    if new:
        problems["username"] = check_username(values["username"])
        problems["password"] = check_password(values, policy)
    if not values.get("institution_id"):
        problems["institution_id"] = "Choose the user's institution (create one first if the list is empty)."
    return {field: problem for field, problem in problems.items() if problem}


class UsersScreen(TableScreen):
    title = "Users"
    subtitle = ("Physicians and administrators, their role and institution. Deactivated users cannot log in. "
                "Institution administrators manage the users of their own institution only.")

    def __init__(self, ctx: ConsoleContext, parent=None):
        self.model = UsersModel()
        super().__init__(ctx, self.model, "Filter users by name, email, role or institution…", parent,
                         "No users yet.")
        self.institutions: list[dict[str, Any]] = []
        #: the server's lengths of a new password (`password_policy_of`), once the screen has loaded
        self.password_policy: PasswordPolicy | None = None
        self.add_button("+ New user", self.create, primary=True)
        self.add_row_button("Edit…", self.edit)
        self.toggle_button = self.add_row_button("Deactivate", self.toggle_active, self._if_own(OWN_ACTIVE_REFUSAL))
        self.reset_button = self.add_row_button(
            "Reset password…", self.reset_password,
            self._if_own("This is your own account: use Change my password… (it asks for your current password)."))
        self.delete_button = self.add_row_button(
            "Delete…", self.remove, self._if_own("You cannot delete your own account; another administrator can."))
        self.change_password_button = self.add_button("Change my password…", self.change_my_password)
        self.finish_toolbar()
        self.table.activated_row.connect(lambda row: self.edit(row) if self.may_act_on(row) else None)
        self.table.view.selectionModel().selectionChanged.connect(self._update_toggle)

    def refresh(self) -> None:
        client = self.ctx.client

        def load() -> tuple[list[dict], list[dict]]:
            return (client.list_all("/api/v1/institutions", text_keys=INSTITUTION_KEYS),
                    client.list_all("/api/v1/users"))

        self.run(load, self._loaded, latest="rows")
        # apart from the rows, and its failure shown nowhere: a server of an earlier release has no
        # policy to say (404), and its own refusal then names the length
        self.ctx.runner.submit(lambda: password_policy_of(client.get("/api/v1/me/password-policy")),
                               self._policy_loaded, lambda _error: None, owner=self)

    def _policy_loaded(self, policy: PasswordPolicy | None) -> None:
        self.password_policy = policy

    def _loaded(self, result: tuple[list[dict], list[dict]]) -> None:
        self.institutions, users = result
        self.model.institution_names = {i["id"]: i["name"] for i in self.institutions}
        self.table.set_rows(users)
        self._update_toggle()

    def _update_toggle(self, *_: Any) -> None:
        row = self.table.selected()
        self.toggle_button.setText("Reactivate" if row is not None and not row.get("active", True)
                                   else "Deactivate")

    def _institution_choices(self) -> list[tuple[str, Any]]:
        """The institutions the signed-in admin may put users in (an institution admin: their own)."""
        administered = [i for i in self.institutions if may_administer_institution(self.ctx.caller, i["id"])]
        return [(one_line(i["name"]), i["id"]) for i in sorted(administered, key=lambda i: i["name"].casefold())]

    def _role_choices(self) -> list[tuple[str, str]]:
        """The roles the signed-in admin may give (only a system admin makes system admins)."""
        return [(ROLE_LABELS[role], role) for role in assignable_roles(self.ctx.caller)]

    def _if_own(self, reason: str) -> Callable[[dict[str, Any]], str]:
        """A row button's (or edit field's) refusal: `reason` on the signed-in administrator's own row,
        which the server refuses to deactivate, delete, reset (403/409: their own password needs the
        old one) or give another role."""
        return lambda row: reason if row.get("id") == self.ctx.user.get("id") else ""

    def may_act_on(self, row: dict[str, Any]) -> bool:
        return may_administer_user(self.ctx.caller, str(row.get("role", "")), str(row.get("institution_id", "")))

    def create(self) -> None:
        def send(values: dict[str, Any]):
            body = {k: values[k] for k in ("username", "password", "full_name", "role", "institution_id")}
            if values["email"]:
                body["email"] = values["email"]
            return lambda: self.ctx.client.post("/api/v1/users", body)

        dialog = FormDialog(self, "New user", self.ctx.runner, lambda v: check_user(v, True, self.password_policy),
                            send)
        dialog.add_line("username", "Username", placeholder="e.g. jnovak")
        dialog.add_line("full_name", "Full name", placeholder="e.g. Dr. Jana Novak")
        dialog.add_line("email", "Email", placeholder="optional")
        dialog.add_combo("role", "Role", self._role_choices(), PHYSICIAN)
        dialog.add_combo("institution_id", "Institution", self._institution_choices(),
                         self.ctx.user.get("institution_id"))
        dialog.add_line("password", "Password", placeholder=length_hint(self.password_policy), password=True)
        dialog.add_line("password2", "Repeat password", password=True)
        self.open_dialog(dialog, lambda user: f"User {one_line(user.get('username'))} created.")

    def edit(self, row: dict[str, Any]) -> None:
        texts = self.form_texts(row, ("full_name", "email"), "user")
        if texts is None:
            return

        def send(values: dict[str, Any]):
            body = {k: values[k] for k in ("full_name", "role", "institution_id", "active") if k in values}
            if values["email"] or row.get("email"):
                body["email"] = values["email"]
            return lambda: self.ctx.client.put(f"/api/v1/users/{row['id']}", body)

        dialog = FormDialog(self, f"Edit user {one_line(row.get('username'))}", self.ctx.runner,
                            lambda v: check_user(v, False), send)
        dialog.add_line("full_name", "Full name", texts["full_name"])
        dialog.add_line("email", "Email", texts["email"], "optional")
        dialog.add_combo("role", "Role", self._role_choices(), row.get("role"))
        dialog.add_combo("institution_id", "Institution", self._institution_choices(), row.get("institution_id"))
        dialog.add_check("active", "Active (may log in)", bool(row.get("active", True)))
        for name, reason in (("role", OWN_ROLE_REFUSAL), ("active", OWN_ACTIVE_REFUSAL)):
            if refusal := self._if_own(reason)(row):
                dialog.hold(name, refusal)
        self.open_dialog(dialog, lambda user: f"User {one_line(user.get('username'))} saved.")

    def toggle_active(self, row: dict[str, Any]) -> None:
        active = not row.get("active", True)
        verb = "reactivated" if active else "deactivated"

        def change() -> None:
            self.run(lambda: self.ctx.client.put(f"/api/v1/users/{row['id']}", {"active": active}),
                     lambda user: self.done(f"User {one_line(user.get('username'))} {verb}."))

        if active:
            change()
        else:
            self.confirm_box = confirm(
                self, "Deactivate user",
                f"Deactivate {one_line(row.get('username'))}? They can no longer log in and their current "
                f"session ends at its next renewal.", change)

    def reset_password(self, row: dict[str, Any]) -> None:
        def check(values: dict[str, Any]) -> dict[str, str]:
            problem = check_password(values, self.password_policy)
            return {"password": problem} if problem else {}

        def send(values: dict[str, Any]):
            return lambda: self.ctx.client.post(f"/api/v1/users/{row['id']}/password",
                                                {"new_password": values["password"]})

        dialog = FormDialog(self, f"Reset password of {one_line(row.get('username'))}", self.ctx.runner, check, send,
                            intro="Give the new password to the user through a safe channel.")
        dialog.add_line("password", "New password", placeholder=length_hint(self.password_policy), password=True)
        dialog.add_line("password2", "Repeat password", password=True)
        self.open_dialog(dialog, lambda _: f"Password of {one_line(row.get('username'))} reset.")

    def remove(self, row: dict[str, Any]) -> None:
        def delete() -> None:
            self.run(lambda: self.ctx.client.delete(f"/api/v1/users/{row['id']}"),
                     lambda _: self.done(f"User {one_line(row.get('username'))} deleted."))
        self.confirm_box = confirm(self, "Delete user",
                                   f"Delete the user {one_line(row.get('username'))} for good? "
                                   f"Deactivating keeps their history readable.", delete)

    def change_my_password(self) -> None:
        """The signed-in administrator's own password, through `POST /api/v1/me/password`: it needs
        the current one (a stolen token alone cannot take the account), so the reset of another
        user's password is not offered on one's own row."""
        def check(values: dict[str, Any]) -> dict[str, str]:
            problems = {"old_password": "" if values["old_password"] else "Type your current password.",
                        "password": check_password(values, self.password_policy) or ""}
            return {field: problem for field, problem in problems.items() if problem}

        def send(values: dict[str, Any]):
            body = {"old_password": values["old_password"], "new_password": values["password"]}
            return lambda: self.ctx.client.post("/api/v1/me/password", body)

        dialog = FormDialog(self, "Change my password", self.ctx.runner, check, send,
                            intro="Your other sessions end when it is changed; this one goes on.")
        dialog.add_line("old_password", "Current password", password=True)
        dialog.add_line("password", "New password", placeholder=length_hint(self.password_policy),
                        password=True)
        dialog.add_line("password2", "Repeat new password", password=True)
        self.open_dialog(dialog, lambda _: "Your password was changed; your other sessions have ended.")
