from __future__ import annotations

from django import forms

from shop.models import Order


class CheckoutForm(forms.Form):
    first_name = forms.CharField(max_length=100)
    last_name = forms.CharField(max_length=100)
    email = forms.EmailField()
    phone = forms.CharField(max_length=32, required=False)
    city = forms.CharField(max_length=100, required=False)
    country = forms.CharField(max_length=100, required=False, initial="Romania")
    coupon_code = forms.CharField(max_length=40, required=False, label="Coupon")
    tracking_consent = forms.BooleanField(
        required=False,
        label="Tell our marketing partners about this order, so they can measure which of "
        "our campaigns brought you here.",
    )

    def customer(self) -> dict[str, str]:
        data = self.cleaned_data
        names = ("first_name", "last_name", "email", "phone", "city", "country", "coupon_code")
        return {name: data[name] for name in names}

    def consent(self) -> str:
        granted = self.cleaned_data["tracking_consent"]
        return Order.Consent.GRANTED if granted else Order.Consent.DENIED
