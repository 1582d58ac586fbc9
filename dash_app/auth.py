"""Accounts: the ``auth`` blueprint (``/login``, ``/register``, ``/logout``) and Flask-Login wiring.

Forms are server-rendered Flask-WTF forms (CSRF token in each).

- Logins are rate limited per (username, client IP), per client IP and, with a much higher limit, per
  username (:func:`mur.db.begin_login_attempt`: counting and recording are one atomic step); a failed login
  always says "invalid username or password", whether or not the account exists. Password checks run
  through the app's :class:`~mur.security.HashingGate`: beyond it, 503 at once.
- A session remembers the user's session generation; logging out bumps it (:func:`mur.db.end_sessions`),
  so an old session cookie replayed later is no longer accepted.
- Registration is open, invite-only or closed (``MUR_REGISTRATION``) and rate limited per client IP.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from dash_app.context import get_context
from mur.db import (
    MAX_EMAIL_LENGTH,
    MAX_USERNAME_LENGTH,
    LoginLimits,
    User,
    authenticate,
    begin_login_attempt,
    begin_registration_attempt,
    cancel_login_attempt,
    create_user,
    end_sessions,
    get_user_by_id,
    mark_login_succeeded,
)
from mur.errors import ConflictError, InvalidInputError
from mur.security import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, PASSWORD_RULE, HashingBusyError
from mur.usernames import USERNAME_ALPHABET

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

PAGES = ("/forecast", "/api", "/monitoring", "/admin")
SESSION_LIFETIME = timedelta(hours=12)
INVALID_LOGIN = "Invalid username or password."
REGISTRATION_FAILED = "Registration failed: choose another username."
"""The one answer to every refusal of a username, taken or not acceptable: it does not say which."""
MAX_INVITE_LENGTH = 100


class LoginUser(UserMixin):
    """Flask-Login's view of a :class:`mur.db.User` (loaded from the database on every request)."""

    def __init__(self, account: User) -> None:
        self.account = account
        self.id = f"{account.id}:{account.session_generation}"  # what the session cookie stores

    @property
    def is_active(self) -> bool:
        return not self.account.disabled


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=MAX_USERNAME_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])


class RegisterForm(FlaskForm):
    username = StringField(
        "Username",
        validators=[DataRequired(), Length(min=1, max=MAX_USERNAME_LENGTH)],
        description=f"up to {MAX_USERNAME_LENGTH} {USERNAME_ALPHABET}; not a look-alike of an existing one",
    )
    email = EmailField("Email (optional)", validators=[Optional(), Length(max=MAX_EMAIL_LENGTH)])
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)],
        description=PASSWORD_RULE[0].upper() + PASSWORD_RULE[1:] + ".",
    )
    confirm = PasswordField(
        "Repeat the password", validators=[DataRequired(), EqualTo("password", "The passwords differ.")]
    )
    invite = StringField(
        "Invite code",
        validators=[Optional(), Length(max=MAX_INVITE_LENGTH)],
        description="from the invite link an administrator gave you",
    )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: one of our pages (never another site), else the Forecast page."""
    parts = urlsplit(target or "")
    return parts.path if not (parts.scheme or parts.netloc) and parts.path in PAGES else "/forecast"


def _load_user(session_user_id: str) -> LoginUser | None:
    """The session's user if it still exists, is enabled and the session is of its current generation."""
    user_id, _, generation = session_user_id.partition(":")
    try:
        account = get_user_by_id(get_context().db, user_id=int(user_id))
        current_generation = int(generation)
    except ValueError:
        return None
    if account is None or account.disabled:
        return None  # a disabled account is logged out on its next request
    if account.session_generation != current_generation:
        return None  # logged out (or password changed) since this session was made
    return LoginUser(account)


def init_login(server: Flask) -> None:
    """Attach Flask-Login to ``server`` (the pages' own guard decides between redirect, 401 and 403)."""
    manager = LoginManager(server)
    manager.session_protection = "strong"
    manager.user_loader(_load_user)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Log in, unless this username or IP has too many recent failures."""
    context = get_context()
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form, next=request.args.get("next", ""))
    # the client's address: the TCP peer, or with MUR_TRUSTED_PROXY_HOPS > 0 what the trusted proxies put in
    # X-Forwarded-For (the app applies werkzeug's ProxyFix; untrusted headers are ignored)
    username, ip = form.username.data or "", request.remote_addr
    settings = context.settings
    limits = LoginLimits(
        per_user_ip=settings.dashboard.login_max_attempts,
        per_ip=settings.dashboard.login_ip_max_attempts,
        per_user=settings.dashboard.login_user_max_attempts,
        window_s=settings.dashboard.login_window_s,
    )
    attempt_id = begin_login_attempt(context.db, username=username, ip=ip, limits=limits)
    if attempt_id is None:
        minutes = max(1, round(settings.dashboard.login_window_s / 60))
        flash(f"Too many failed login attempts. Try again in {minutes} minute(s).", "error")
        logger.warning("login rate limit hit for %r from %s", username[:64], ip)
        return render_template("login.html", form=form, next=request.args.get("next", "")), 429
    try:
        with context.hashing.slot():
            account = authenticate(context.db, username=username, password=form.password.data or "")
    except HashingBusyError:
        cancel_login_attempt(context.db, attempt_id=attempt_id)  # no password was checked
        raise
    if account is None:
        flash(INVALID_LOGIN, "error")
        return render_template("login.html", form=form, next=request.args.get("next", "")), 401
    mark_login_succeeded(context.db, attempt_id=attempt_id)
    session.clear()  # a fresh session for the new identity
    session.permanent = True
    login_user(LoginUser(account))
    return redirect(safe_next(request.args.get("next")))


def _register_page(form: RegisterForm, mode: str, status: int) -> ResponseReturnValue:
    return render_template("register.html", form=form, mode=mode), status


def _refused(
    form: RegisterForm, mode: str, field: StringField | EmailField | PasswordField, message: str
) -> ResponseReturnValue:
    """The form again (400) with ``message`` under ``field``."""
    field.errors = [*field.errors, message]
    return _register_page(form, mode, 400)


@bp.route("/register", methods=["GET", "POST"])
def register() -> ResponseReturnValue:
    """Create a member account, if registration is open or with an invite (admins: ``mur users create``).

    Every refusal of a well-formed form is a 400 on the form. A taken username gets the same status and
    the same message as a username that is refused for any other reason (``REGISTRATION_FAILED``), so the
    answer does not single out existing accounts; attempts are rate limited per client IP, and in invite
    mode a username is only looked at with a valid invite.
    """
    context = get_context()
    settings = context.settings
    mode = settings.registration_mode
    form = RegisterForm()
    if request.method == "GET" and not form.invite.data:
        form.invite.data = request.args.get("invite", "")
    if mode == "closed":
        return _register_page(form, mode, 403 if request.method == "POST" else 200)
    if not form.validate_on_submit():
        return _register_page(form, mode, 400 if request.method == "POST" else 200)
    invite = (form.invite.data or "").strip() or None
    if mode == "invite" and invite is None:
        return _refused(
            form, mode, form.invite, "An invite code is required: ask an administrator for an invite link."
        )
    ip = request.remote_addr  # as for logins
    allowed = begin_registration_attempt(
        context.db,
        ip=ip,
        limit=settings.dashboard.registration_max_per_ip,
        window_s=settings.dashboard.registration_window_s,
    )
    if not allowed:
        logger.warning("registration rate limit hit from %s", ip)
        flash("Too many registration attempts from your address. Try again later.", "error")
        return _register_page(form, mode, 429)
    try:
        with context.hashing.slot():
            create_user(
                context.db,
                username=form.username.data or "",
                email=form.email.data or None,
                password=form.password.data or "",
                roles=("member",),
                invite_code=invite if mode == "invite" else None,
            )
    except ConflictError:
        logger.info("registration refused: username taken")
        return _refused(form, mode, form.username, REGISTRATION_FAILED)
    except InvalidInputError as exc:  # weak password, bad username, email or invite
        message = str(exc)
        if message.startswith("username"):  # answered exactly like a taken one
            return _refused(form, mode, form.username, REGISTRATION_FAILED)
        target: StringField | EmailField | PasswordField = form.username
        if message.startswith("password"):
            target = form.password
        elif "email" in message:
            target = form.email
        elif message.startswith("invite"):
            target = form.invite
        return _refused(form, mode, target, message[0].upper() + message[1:] + ".")
    flash("Account created. You can log in now.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """Log out (POST with the CSRF token, so another site cannot log people out).

    The user's session generation is bumped, so this session cookie, if replayed, no longer logs anyone in
    (and the user's other sessions end too).
    """
    if current_user.is_authenticated:
        end_sessions(get_context().db, user_id=current_user.account.id)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
