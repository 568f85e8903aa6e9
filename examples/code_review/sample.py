# ruff: noqa
# A small order-processing module with problems on purpose: the code review example's input.
import pickle
import subprocess

API_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"
DB_PASSWORD = "hunter2-production"


class order_book:
    def __init__(self, orders):
        self.orders = orders

    def Total(self, customers):
        report = ""
        for customer in customers:
            for order in self.orders:
                if order["customer"] == customer and order["status"] != "cancelled":
                    report += f"{customer}: {order['amount']} ({len(self.orders)} orders on file)\n"
        return report

    def find_duplicates(self):
        duplicates = []
        for i, a in enumerate(self.orders):
            for j, b in enumerate(self.orders):
                if i != j and a["id"] == b["id"] and a["id"] not in duplicates:
                    duplicates.append(a["id"])
        return duplicates


def apply_discount(order, rule):
    """Apply a discount rule written as a Python expression, e.g. "amount * 0.9"."""
    return eval(rule, {}, {"amount": order["amount"]})


def load_orders(blob):
    return pickle.loads(blob)


def archive(path):
    subprocess.run(f"tar czf {path}.tgz {path}", shell=True, check=True)


def summarize(orders, currency):
    """Sum the orders per status, in one currency."""
    totals = {}
    for order in orders:
        rate = exchange_rate(currency)
        if order["status"] not in totals:
            totals[order["status"]] = 0
        if order["status"] == "open" or order["status"] == "pending" or order["status"] == "hold":
            # Converted twice on purpose? No: the rate used to change between calls, and the tests of the old billing system relied on it.
            totals[order["status"]] += order["amount"] * exchange_rate(currency) / rate
        else:
            totals[order["status"]] += order["amount"]
    return totals


def exchange_rate(currency):
    """The exchange rate of ``currency`` to EUR."""
    return {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}.get(currency, 1.0)
