"""``manage.py demo``: the whole thing working, offline, with one command.

1. migrate the SQLite database and create an admin user;
2. start the web server (shop, admin and the provider sandbox) in a background thread, so that
   delivery really goes over HTTP to the sandbox;
3. set up the sandbox's accounts and one tracking site per provider pointing at it;
4. place sample orders, some of which are skipped or fail, each for a visible reason; as in
   the shop's checkout, each order's events go to this process's background delivery thread
   when the order commits, and the demo waits for that thread before the next sample;
5. wait for the short retry of the sample that meets a 503;
6. print a summary per tracking site, then keep serving until Ctrl-C (``--no-serve``: stop),
   with the sweep running every few seconds beside the delivery thread.

Re-running it is safe: it creates what is missing and leaves the rest alone.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.servers.basehttp import (
    ThreadedWSGIServer,
    WSGIRequestHandler,
    get_internal_wsgi_application,
)
from django.db import close_old_connections, connections
from django.db.models import Count, Q
from django.utils import timezone

from django_conversions.contrib.sandbox import control
from django_conversions.delivery import deliver_due
from django_conversions.feed_views import feed_path, takes_feed
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.tasks import background
from shop.cart import Line
from shop.checkout import place_order
from shop.models import Order, Product

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # a local demo; never on a reachable machine
WORKER_INTERVAL = 2.0
# Longest wait for the delivery thread, per sample and for the retries: a sandbox request
# answers at once, so reaching it means something is wrong (the summary then shows what).
SETTLE_SECONDS = 30.0

PRODUCTS = [
    ("MUG-CLASSIC", "Classic mug", "Stoneware, 350 ml, dishwasher safe.", "12.50", "☕"),
    ("MUG-TRAVEL", "Travel mug", "Keeps coffee hot for 6 hours.", "24.90", "🥤"),
    ("CUPS-ESPRESSO", "Espresso cups", "A set of two, 90 ml.", "16.00", "🍵"),
    ("BEANS-1KG", "Coffee beans, 1 kg", "Medium roast from a small roastery.", "29.00", "🫘"),
    ("DRIPPER", "Pour-over dripper", "Ceramic, for one or two cups.", "19.90", "⏳"),
]


@dataclass(frozen=True)
class Sample:
    number: str
    story: str
    customer: dict[str, str]
    cart: list[tuple[str, int]]
    scan: bool = True
    consent: str = Order.Consent.GRANTED
    paid: bool = True
    # (provider, fault, options): a sandbox fault switched on just before this order.
    fault: tuple[str, str, dict[str, Any]] | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _customer(first: str, last: str, email: str, city: str = "Cluj-Napoca") -> dict[str, str]:
    return {
        "first_name": first,
        "last_name": last,
        "email": email,
        "phone": "0775 123 123",
        "city": city,
        "country": "Romania",
        "coupon_code": "",
    }


SAMPLES = [
    Sample(
        "DEMO-1001",
        "scanned a QR code, consented: delivered to both providers",
        _customer("Ana", "Popescu", "ana.popescu@example.com"),
        [("MUG-CLASSIC", 2), ("BEANS-1KG", 1)],
    ),
    Sample(
        "DEMO-1002",
        "Scanova answers 503 once: retried a second later, then delivered",
        _customer("Mihai", "Ionescu", "mihai.ionescu@example.com", "Iași"),
        [("MUG-TRAVEL", 1), ("DRIPPER", 1)],
        fault=("scanova", "server_error", {"status_code": 503, "times": 1}),
    ),
    Sample(
        "DEMO-1003",
        "typed the shop's address, no QR scan: Scanova skipped",
        _customer("Elena", "Dumitru", "elena.dumitru@example.com", "Timișoara"),
        [("CUPS-ESPRESSO", 1)],
        scan=False,
    ),
    Sample(
        "DEMO-1004",
        "did not consent to tracking: VTmarketing skipped",
        _customer("Radu", "Stan", "radu.stan@example.com", "Brașov"),
        [("MUG-CLASSIC", 1)],
        consent=Order.Consent.DENIED,
    ),
    Sample(
        "DEMO-1005",
        "an address the shop's form accepts but VTmarketing refuses: failed with its 400",
        _customer("Sam", "Tester", "sam@localhost"),
        [("DRIPPER", 2)],
    ),
    Sample(
        "DEMO-1006",
        "not paid yet: no conversion (mark it paid in the admin and watch it go out)",
        _customer("Ioana", "Marin", "ioana.marin@example.com", "Sibiu"),
        [("BEANS-1KG", 2)],
        paid=False,
    ),
]


class DemoRequestHandler(WSGIRequestHandler):
    """Django's request handler, quiet while the demo sets up (its output is the summary)."""

    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not type(self).quiet:
            super().log_message(format, *args)


class DemoServer:
    """The site (shop, admin, sandbox) served from a background thread."""

    def __init__(self, addr: str, port: int) -> None:
        try:
            self.httpd = ThreadedWSGIServer((addr, port), DemoRequestHandler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"Port {port} on {addr} is already in use (another demo or runserver?). "
                    "Stop it, or choose another port: manage.py demo --port 8001"
                ) from err
            raise
        self.httpd.set_app(StaticFilesHandler(get_internal_wsgi_application()))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Command(BaseCommand):
    help = (
        "Run the example shop's demo: migrate, create an admin user, connect tracking sites to "
        "the local provider sandbox, place sample orders, deliver them, print a summary, then "
        "serve the shop and the admin until Ctrl-C (--no-serve stops after the summary)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-serve", action="store_true", help="Stop after the summary.")
        parser.add_argument("--addr", default="127.0.0.1", help="Address to serve on.")
        parser.add_argument(
            "--port", type=int, default=8000, help="Port to serve on (0: any free port)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.heading("Database")
        call_command("migrate", interactive=False, verbosity=0)
        self.line(f"migrated {connections['default'].settings_dict['NAME']}")
        login = self.ensure_admin()
        server = DemoServer(options["addr"], options["port"])
        server.start()
        # The summary gives every failure with its reason; no log lines in between.
        app_logger = logging.getLogger("django_conversions")
        level = app_logger.level
        app_logger.setLevel(logging.ERROR)
        try:
            self.setup(server.url)
            self.place_samples()
            self.settle()
            self.summary()
            app_logger.setLevel(level)
            if not options["no_serve"]:
                self.serve(server.url)
            else:
                self.line(f"\nAdmin login: {login}. Serve it all with: manage.py demo")
        finally:
            app_logger.setLevel(level)
            server.stop()
            control.clear_faults()

    # --- steps ---------------------------------------------------------------------------------

    def ensure_admin(self) -> str:
        users = get_user_model()
        user = users.objects.filter(username=ADMIN_USER).first()
        if user is None:
            users.objects.create_superuser(ADMIN_USER, "admin@example.com", ADMIN_PASSWORD)
            self.line(f"created the admin user {ADMIN_USER!r}")
            return f"{ADMIN_USER} / {ADMIN_PASSWORD}"
        if user.check_password(ADMIN_PASSWORD):
            return f"{ADMIN_USER} / {ADMIN_PASSWORD}"
        return f"{ADMIN_USER} / (the password you set)"

    def setup(self, base_url: str) -> None:
        self.heading("Catalogue and tracking sites")
        for sku, name, description, price, emoji in PRODUCTS:
            Product.objects.get_or_create(
                sku=sku,
                defaults={
                    "name": name,
                    "description": description,
                    "price": Decimal(price),
                    "emoji": emoji,
                },
            )
        self.line(f"{Product.objects.count()} products")
        control.clear_faults()
        accounts = control.ensure_accounts()
        for site in control.connect_tracking_sites(f"{base_url}/sandbox", accounts):
            key = site.current_key()
            masked = key.masked if key else "no key"
            self.line(f"{site.name:<24} → {site.endpoint_url}  (API key {masked})")
        for name, path in feed_paths():
            self.line(f"{name:<24}   product feed: {base_url}{path}")

    def place_samples(self) -> None:
        self.heading("Sample orders")
        products = {p.sku: p for p in Product.objects.all()}
        for sample in SAMPLES:
            if Order.objects.filter(number=sample.number).exists():
                self.line(f"{sample.number}  already placed")
                continue
            if sample.fault:
                provider, mode, fault_options = sample.fault
                control.set_fault(provider, mode, **fault_options)
            lines = [Line(products[sku], quantity) for sku, quantity in sample.cart]
            place_order(
                lines,
                customer=sample.customer,
                scan_session_id=str(uuid.uuid4()) if sample.scan else None,
                consent=sample.consent,
                number=sample.number,
                pay=sample.paid,
            )
            # Delivered by the background thread once the order committed. Waiting here keeps
            # each sample's story its own: the next sample's fault meets only the next order.
            background.wait_idle(timeout=SETTLE_SECONDS)
            self.line(f"{sample.number}  {sample.story}")
        control.clear_faults()

    def settle(self) -> None:
        """Wait until the delivery thread is done and the retries due in the next few seconds
        are sent."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while background.wait_idle(timeout=max(0.0, deadline - time.monotonic())):
            soon = (
                ConversionEvent.objects.filter(
                    status=EventStatus.PENDING,
                    site__is_active=True,
                    site__paused_at__isnull=True,
                    next_attempt_at__lte=timezone.now() + timedelta(seconds=15),
                )
                .order_by("next_attempt_at")
                .values_list("next_attempt_at", flat=True)
                .first()
            )
            if soon is None or time.monotonic() > deadline:
                return
            time.sleep(min(5.0, max(0.1, (soon - timezone.now()).total_seconds() + 0.05)))
            # The delivery thread sends the retry at that time too; this sweep covers the
            # moment before the thread wakes. Claims let only one of them send it.
            deliver_due()

    def summary(self) -> None:
        self.heading("Delivery summary")
        waiting = Q(status__in=(EventStatus.PENDING, EventStatus.SENDING), attempts=0)
        sites = TrackingSite.objects.order_by("name").annotate(
            delivered=Count("events", filter=Q(events__status=EventStatus.DELIVERED)),
            retrying=Count(
                "events", filter=Q(events__status=EventStatus.PENDING, events__attempts__gt=0)
            ),
            failed=Count("events", filter=Q(events__status=EventStatus.FAILED)),
            skipped=Count("events", filter=Q(events__status=EventStatus.SKIPPED)),
        )
        columns = ("delivered", "retrying", "failed", "skipped")
        self.line(f"{'site':<24}" + "".join(f"{c:>11}" for c in columns))
        for site in sites:
            counts = "".join(f"{getattr(site, c):>11}" for c in columns)
            state = f"  (paused: {site.paused_reason})" if site.is_paused else ""
            self.line(f"{site.name:<24}{counts}{state}")
        waiting_count = ConversionEvent.objects.filter(waiting).count()
        if waiting_count:
            self.line(f"{waiting_count} event(s) not sent yet (site paused or held back)")
        self.heading("Why")
        for event in ConversionEvent.objects.select_related("site").order_by(
            "order_reference", "site__name"
        ):
            status = "retrying" if event.is_retrying else event.status
            attempts = f"{event.attempts} attempt{'s' if event.attempts != 1 else ''}"
            reason = f"  {event.last_error}" if event.last_error else ""
            row = f"{event.order_reference:<12}{event.site.name:<24}{status:<10}{attempts:<11}"
            self.line((row + reason).rstrip())

    def serve(self, url: str) -> None:
        DemoRequestHandler.quiet = False
        self.heading("Serving")
        scan = uuid.uuid4()
        self.line(f"Shop:                 {url}/")
        self.line(f"Land from a QR scan:  {url}/?scnv={scan}")
        self.line(f"Admin:                {url}/admin/   (login {ADMIN_USER} / {ADMIN_PASSWORD})")
        self.line(f"What the sandbox got: {url}/admin/conversions_sandbox/sandboxrequest/")
        for _name, path in feed_paths():
            self.line(f"Product feed:         {url}{path}  (CSV: {path[:-3]}csv)")
        self.line(f"Sandbox faults:       {url}/admin/conversions_sandbox/sandboxfault/")
        self.line(
            "Orders are delivered from a background thread right after checkout; the sweep "
            f"runs every {WORKER_INTERVAL:g} s beside it for anything that thread never sent "
            "(in production: manage.py conversions_deliver --loop). Quit with Ctrl-C.\n"
        )
        stop = threading.Event()
        worker = threading.Thread(target=_deliver_loop, args=(stop,), daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(1.0)
        except KeyboardInterrupt:
            self.line("\nStopping.")
        finally:
            stop.set()

    # --- output --------------------------------------------------------------------------------

    def heading(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{text}"))

    def line(self, text: str) -> None:
        self.stdout.write(text)


def _deliver_loop(stop: threading.Event) -> None:
    """The sweep: whatever is due that the background delivery thread did not send."""
    while not stop.wait(WORKER_INTERVAL):
        close_old_connections()
        try:
            deliver_due()
        except Exception as err:  # keep serving; the next round tries again
            print(f"[demo worker] delivery round failed: {type(err).__name__}: {err}")
    connections.close_all()


def feed_paths() -> list[tuple[str, str]]:
    """The product feed of each tracking site whose provider reads one (VTmarketing)."""
    sites = TrackingSite.objects.filter(is_active=True).order_by("name")
    paths = [(site.name, feed_path(site)) for site in sites if takes_feed(site)]
    return [(name, path) for name, path in paths if path]
