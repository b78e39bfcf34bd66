"""Emergency keywords in every language of the resident pages (and Vietnamese): a 911 call
arriving as a 311 report raises the flag whatever language it is written in, ordinary
reports in those languages do not, and the reporter is told the emergency figure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from server.intake.servicetypes import DEFAULT_EMERGENCY_KEYWORDS, EmergencyMatcher
from server.models import WorkOrder
from server.notify.catalog import catalog
from tests.notify.support import HERE, prepare, push_settings, report

# Real-sounding reports: (language, text). Each says an emergency.
EMERGENCIES = [
    ("en", "Strong smell of gas outside number 12"),
    ("en", "Power line down across the sidewalk, sparking"),
    ("en", "Man lying on the ground, not breathing"),
    ("es", "Huele mucho a gas en la esquina de la escuela"),
    ("es", "Hay un cable eléctrico caído en la banqueta"),
    ("es", "Un señor está herido junto a la alcantarilla"),
    ("es", "Sale humo de la tapa de registro"),
    ("vi", "Có mùi gas rất nặng ở đầu hẻm"),
    ("vi", "Dây điện bị đứt rơi xuống đường"),
    ("vi", "Có người bị thương ở ngã tư"),
    ("zh-Hans", "楼下闻到很浓的煤气味"),
    ("zh-Hans", "路边电线掉在地上还冒火花"),
    ("zh-Hans", "有人受伤了，躺在路上"),
    ("ru", "В подъезде сильно пахнет газом"),
    ("ru", "Оборванный провод лежит на тротуаре"),
    ("ru", "Провал грунта посреди дороги, машина провалилась"),
    ("bn", "রাস্তায় গ্যাসের গন্ধ পাওয়া যাচ্ছে"),
    ("bn", "বিদ্যুতের তার ছিঁড়ে রাস্তায় পড়ে আছে"),
    ("bn", "একজন লোক আহত হয়েছে"),
    ("ht", "Gen yon sant gaz fò anpil nan lari a"),
    ("ht", "Fil elektrik tonbe atè a devan lekòl la"),
    ("ht", "Gen yon moun blese bò kwen an"),
    ("ko", "골목에서 가스 냄새가 심하게 나요"),
    ("ko", "전선이 끊어져서 길에 떨어져 있어요"),
    ("ko", "사람이 다쳤어요, 빨리 와 주세요"),
    ("ar", "توجد رائحة غاز قوية في الشارع"),
    ("ar", "سلك كهرباء مقطوع على الرصيف"),
    ("ar", "يوجد شخص مصاب بجانب الطريق"),
    ("ar", "حريق في حاوية القمامة"),
    ("fr", "Ça sent le gaz dans tout l'immeuble"),
    ("fr", "Des fils électriques tombés par terre"),
    ("fr", "Une personne blessée au carrefour"),
]

# Ordinary 311 reports in the same languages: none of them is an emergency.
ORDINARY = [
    ("en", "Pothole in the right lane, about a foot wide"),
    ("en", "Fire hydrant leaking a little water"),
    ("en", "Street light out in front of the gas station"),
    ("es", "Bache grande en el carril derecho"),
    ("es", "Grafiti en la pared del parque"),
    ("es", "El farol de la calle no prende"),
    ("vi", "Đèn đường bị hỏng trước nhà tôi"),
    ("vi", "Có rác bị vứt bừa bãi trên vỉa hè"),
    ("zh-Hans", "路灯不亮了"),
    ("zh-Hans", "人行道上有很多垃圾"),
    ("ru", "Не горит фонарь у дома 5"),
    ("ru", "Яма на дороге возле остановки"),
    ("bn", "রাস্তার বাতি জ্বলছে না"),
    ("bn", "ফুটপাতে অনেক আবর্জনা"),
    ("ht", "Limyè lari a pa limen depi twa jou"),
    ("ht", "Gen yon gwo twou nan lari a"),
    ("ko", "가로등이 고장났어요"),
    ("ko", "도로에 큰 구멍이 있어요"),
    ("ar", "فيها حفرة كبيرة في الطريق"),
    ("ar", "عمود الإنارة لا يعمل"),
    ("fr", "Le feu de circulation est en panne"),
    ("fr", "Nid-de-poule sur la chaussée devant l'école"),
]


@pytest.fixture(scope="module")
def matcher() -> EmergencyMatcher:
    return EmergencyMatcher(list(DEFAULT_EMERGENCY_KEYWORDS))


@pytest.mark.parametrize(("language", "text"), EMERGENCIES, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(EMERGENCIES)])
def test_an_emergency_in_any_language_raises_the_flag(matcher: EmergencyMatcher, language: str, text: str) -> None:
    assert matcher.find(text) is not None, f"{language}: {text}"


@pytest.mark.parametrize(("language", "text"), ORDINARY, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(ORDINARY)])
def test_an_ordinary_report_in_any_language_does_not(matcher: EmergencyMatcher, language: str, text: str) -> None:
    assert matcher.find(text) is None, f"{language}: {text}"


def test_every_language_of_the_resident_pages_is_covered() -> None:
    languages = {lang for lang, _ in EMERGENCIES}
    assert {"en", "es", "zh-Hans", "ru", "bn", "ht", "ko", "ar", "fr", "vi"} <= languages
    assert {lang for lang, _ in ORDINARY} >= languages - {"en"}


def test_a_type_without_keywords_has_detection_off_and_its_own_keywords_add_up() -> None:
    assert EmergencyMatcher([]).find("Huele a gas") is None
    own = EmergencyMatcher(["basement flood"])
    assert own.find("Basement flood again") == "basement flood"
    assert own.find("Fuga de gas en el sótano") == "fuga de gas"  # the built-in phrases still count


def test_spanish_gas_smell_becomes_an_emergency_told_the_emergency_figure(engine: Engine, database_url: str) -> None:
    settings = push_settings(database_url)
    prepare(engine)
    routine = report(engine, settings, lat=HERE[0] - 0.05, lon=HERE[1], description="Bache grande")
    gas = report(engine, settings, lat=HERE[0] - 0.06, lon=HERE[1],
                 description="Huele muchísimo a gas junto al bache, por favor vengan")
    assert not routine.emergency and gas.emergency
    with Session(engine) as session:
        order = session.get(WorkOrder, gas.work_order_id)
        assert order is not None and order.emergency and order.priority == 1
        assert order.sla_due_at is not None and order.sla_due_at - order.first_reported_at <= timedelta(hours=4)
    assert gas.expected is not None and gas.expected.emergency and gas.expected.p80_hours <= 4
    english = catalog("resident")
    assert gas.notice.startswith(english.t("en", "notice.emergency"))
    assert english.t("en", "duration.hours", count=4) in gas.notice
    assert routine.expected is not None and routine.expected.p80_hours > 4
