"""Residents: reporting a problem, tracking it, honest expected dates, notices.

    expected   time-to-close figures and the promised range (and their replay on history)
    notices    the words of service_notice and the report page, from the catalogues
    service    reports, tracking by number/token/city number, subscriptions to a case
    api        the /api/resident routes and the /track/{ref} page
"""
