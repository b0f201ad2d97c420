// The login screen; also where an expired session lands, with the reason in words.

import { h, mount, field } from "./dom.js";

export function loginView(ctx) {
  const username = h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("p", { class: "form-error", id: "login-error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-wide", text: "Log in" });
  const form = h("form", { class: "login-form", "aria-labelledby": "login-title", novalidate: true },
    h("h1", { id: "login-title", text: "Sign in to SIVR" }),
    h("p", { class: "muted", text: "Radiology images and findings from every institution." }),
    ctx.expiredMessage ? h("p", { class: "notice", id: "login-notice", text: ctx.expiredMessage }) : null,
    field("Username", username),
    field("Password", password),
    message,
    submit);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    if (!username.value.trim() || !password.value) {
      message.textContent = "Enter your username and password.";
      message.hidden = false;
      return;
    }
    submit.disabled = true;
    submit.textContent = "Logging in…";
    try {
      await ctx.session.login(username.value.trim(), password.value);
      ctx.expiredMessage = null;
      ctx.announce(`Logged in as ${ctx.session.user.full_name || ctx.session.user.username}.`);
      if (!location.hash || location.hash === "#/login") location.hash = "#/patients";
      else ctx.navigate(location.hash);
    } catch (err) {
      message.textContent = err.code === "invalid_credentials"
        ? "The username or password is not correct."
        : err.code === "rate_limited"
          ? `Too many failed attempts. Try again in ${err.details.retryAfter || "a few"} seconds.`
          : ctx.describeError(err);
      message.hidden = false;
      password.value = "";
      password.focus();
      submit.disabled = false;
      submit.textContent = "Log in";
    }
  });
  mount(ctx.main, h("section", { class: "login-page" }, form));
  username.focus();
  return null;
}
