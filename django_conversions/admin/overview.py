"""The delivery overview: per site, events per day and delivery state, as numbers and a chart.

Two grouped queries build the whole page whatever the number of events; the chart is an inline
SVG drawn from precomputed rectangles (no JavaScript, nothing loaded from elsewhere).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from django_conversions.admin.display import STATE_COLOURS, STATES
from django_conversions.conf import conversions_settings
from django_conversions.health import Health, delivery_health
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.states import state_expression

CHART_BAR_WIDTH = 36
CHART_GAP = 14
CHART_HEIGHT = 140
FAILED_SHOWN = 25


@dataclass
class Bar:
    """One segment of a day's stacked bar."""

    state: str
    count: int
    x: int
    y: float
    height: float
    colour: str


@dataclass
class Day:
    day: date
    counts: dict[str, int]
    bars: list[Bar] = field(default_factory=list)
    label_x: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def counts_in_order(self) -> list[int]:
        return [self.counts.get(state, 0) for state in STATES]

    @property
    def tooltip(self) -> str:
        parts = [f"{n} {STATES[s]}" for s, n in self.counts.items() if n]
        return f"{self.day:%a %d %b}: " + (", ".join(parts) or "no events")


@dataclass
class SiteOverview:
    site: TrackingSite
    days: list[Day]
    state: str

    @property
    def totals(self) -> list[int]:
        return [sum(day.counts.get(state, 0) for day in self.days) for state in STATES]

    @property
    def total(self) -> int:
        return sum(self.totals)


@dataclass
class Overview:
    start: datetime
    days: list[date]
    sites: list[SiteOverview]
    failed_events: list[ConversionEvent]
    failed_total: int
    chart_width: int = 0
    chart_height: int = CHART_HEIGHT
    bar_width: int = CHART_BAR_WIDTH
    peak: int = 0  # events on the busiest day of any site: the top of every chart
    #: Due events and the delivery lag, as ``conversions_status`` reports them.
    health: Health | None = None

    @property
    def lag_seconds(self) -> int:
        return round(self.health.lag_seconds) if self.health else 0

    @property
    def lag_too_long(self) -> bool:
        return self.lag_seconds > conversions_settings.HEALTH_MAX_LAG

    @property
    def paused_sites(self) -> list[TrackingSite]:
        return [s.site for s in self.sites if s.site.is_paused]

    @property
    def held_sites(self) -> list[TrackingSite]:
        now = timezone.now()
        return [s.site for s in self.sites if s.site.held_until and s.site.held_until > now]

    @property
    def legend(self) -> list[tuple[str, str, str]]:
        return [(state, label, STATE_COLOURS[state]) for state, label in STATES.items()]


def _site_state(site: TrackingSite) -> str:
    if not site.is_active:
        return "inactive"
    if site.is_paused:
        return "paused"
    if site.held_until and site.held_until > timezone.now():
        return "held"
    return "active"


def build_overview(days: int = 7) -> Overview:
    """Events created in the last ``days`` days (today included), per site, day and state."""
    today = timezone.localdate()
    first_day = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first_day, time.min))
    day_list = [first_day + timedelta(days=i) for i in range(days)]

    counts: dict[int, dict[date, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    rows = (
        ConversionEvent.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at"), state=state_expression())
        .values("site_id", "day", "state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in rows:
        counts[row["site_id"]][row["day"]][row["state"]] = row["n"]

    sites = [
        SiteOverview(
            site=site,
            days=[Day(day, dict(counts[site.pk].get(day, {}))) for day in day_list],
            state=_site_state(site),
        )
        for site in TrackingSite.objects.all()
    ]
    failed = ConversionEvent.objects.filter(status=EventStatus.FAILED, created_at__gte=start)
    overview = Overview(
        start=start,
        days=day_list,
        sites=sites,
        failed_events=list(failed.select_related("site").order_by("-updated_at")[:FAILED_SHOWN]),
        failed_total=failed.count(),
        health=delivery_health(failed_window=conversions_settings.HEALTH_FAILED_WINDOW),
    )
    _lay_out_chart(overview)
    return overview


def _lay_out_chart(overview: Overview) -> None:
    """Stacked bars on one scale for every site, so the sites can be compared by eye."""
    overview.peak = max((day.total for site in overview.sites for day in site.days), default=0)
    peak = overview.peak or 1
    overview.chart_width = len(overview.days) * (CHART_BAR_WIDTH + CHART_GAP)
    for site in overview.sites:
        for index, day in enumerate(site.days):
            x = index * (CHART_BAR_WIDTH + CHART_GAP) + CHART_GAP // 2
            day.label_x = x + CHART_BAR_WIDTH // 2
            bottom = float(CHART_HEIGHT)
            for state in STATES:
                count = day.counts.get(state, 0)
                if not count:
                    continue
                height = round(count / peak * (CHART_HEIGHT - 2), 2)
                bottom -= height
                day.bars.append(
                    Bar(state, count, x, round(bottom, 2), height, STATE_COLOURS[state])
                )
