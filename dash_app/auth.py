"""Accounts: the ``auth`` blueprint (``/login``, ``/register``, ``/logout``) and Flask-Login wiring.

Forms are server-rendered Flask-WTF forms (CSRF token in each). Logins are rate limited per username and
per client IP through ``login_attempts`` (:func:`mur.db.count_recent_failures`); a failed login always says
"invalid username or password", whether or not the account exists.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from dash_app.context import get_context
from mur.db import (
    MAX_EMAIL_LENGTH,
    MAX_USERNAME_LENGTH,
    User,
    authenticate,
    count_recent_failures,
    create_user,
    get_user_by_id,
    record_login_attempt,
)
from mur.errors import ConflictError, InvalidInputError
from mur.security import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

logger = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

PAGES = ("/forecast", "/api", "/admin")
SESSION_LIFETIME = timedelta(hours=12)
INVALID_LOGIN = "Invalid username or password."


class LoginUser(UserMixin):
    """Flask-Login's view of a :class:`mur.db.User` (loaded from the database on every request)."""

    def __init__(self, account: User) -> None:
        self.account = account
        self.id = str(account.id)

    @property
    def is_admin(self) -> bool:
        return self.account.is_admin

    @property
    def is_active(self) -> bool:
        return not self.account.disabled


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=MAX_USERNAME_LENGTH)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])


class RegisterForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(min=1, max=MAX_USERNAME_LENGTH)])
    email = EmailField("Email (optional)", validators=[Optional(), Length(max=MAX_EMAIL_LENGTH)])
    password = PasswordField(
        "Password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH)],
        description=f"at least {MIN_PASSWORD_LENGTH} characters, mixing letters, digits or symbols",
    )
    confirm = PasswordField(
        "Repeat the password", validators=[DataRequired(), EqualTo("password", "The passwords differ.")]
    )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: one of our pages (never another site), else the Forecast page."""
    if not target:
        return "/forecast"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path not in PAGES:
        return "/forecast"
    return parts.path


def client_ip() -> str | None:
    """The peer address (behind a reverse proxy, apply werkzeug's ProxyFix so this is the client's)."""
    return request.remote_addr


def _load_user(user_id: str) -> LoginUser | None:
    try:
        account = get_user_by_id(get_context().db, user_id=int(user_id))
    except ValueError:
        return None
    if account is None or account.disabled:
        return None  # a disabled account is logged out on its next request
    return LoginUser(account)


def init_login(server: Flask) -> LoginManager:
    """Attach Flask-Login to ``server`` (the pages' own guard decides between redirect, 401 and 403)."""
    manager = LoginManager()
    manager.session_protection = "strong"
    manager.login_view = "auth.login"
    manager.user_loader(_load_user)
    manager.init_app(server)
    return manager


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Log in, unless this username or IP has too many recent failures."""
    context = get_context()
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form, next=request.args.get("next", ""))
    username, ip = form.username.data or "", client_ip()
    settings = context.settings
    failures = count_recent_failures(context.db, username=username, ip=ip, window_s=settings.login_window_s)
    if failures >= settings.login_max_attempts:
        minutes = max(1, round(settings.login_window_s / 60))
        flash(f"Too many failed login attempts. Try again in {minutes} minute(s).", "error")
        logger.warning("login rate limit hit for %r from %s", username[:64], ip)
        return render_template("login.html", form=form, next=request.args.get("next", "")), 429
    account = authenticate(context.db, username=username, password=form.password.data or "")
    record_login_attempt(context.db, username=username, ip=ip, success=account is not None)
    if account is None:
        flash(INVALID_LOGIN, "error")
        return render_template("login.html", form=form, next=request.args.get("next", "")), 401
    session.clear()  # a fresh session for the new identity
    session.permanent = True
    login_user(LoginUser(account))
    return redirect(safe_next(request.args.get("next")))


@bp.route("/register", methods=["GET", "POST"])
def register() -> ResponseReturnValue:
    """Create a member account (admins are made with ``mur users create NAME --admin``)."""
    form = RegisterForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("register.html", form=form), status
    try:
        create_user(
            get_context().db,
            username=form.username.data or "",
            email=form.email.data or None,
            password=form.password.data or "",
            roles=("member",),
        )
    except ConflictError:
        form.username.errors = [*form.username.errors, "That username is already taken."]
        return render_template("register.html", form=form), 409
    except InvalidInputError as exc:  # weak password, bad username or email
        message = str(exc)
        target = form.password if message.startswith("password") else form.username
        if "email" in message:
            target = form.email
        target.errors = [*target.errors, message[0].upper() + message[1:] + "."]
        return render_template("register.html", form=form), 400
    flash("Account created. You can log in now.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """Log out (POST with the CSRF token, so another site cannot log people out)."""
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
