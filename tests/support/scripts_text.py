"""Benign prose in several scripts (hand-written for these tests: a company's quarterly
note, the same content in each language), and a long document built from it."""

from __future__ import annotations

import random
import re

SENTENCES = {
    "en": (
        "The quarterly report shows that our regional offices met most of their targets, "
        "although the northern branch fell short because of delays in the supply chain. "
        "We expect the new warehouse to open in March, which should cut delivery times by "
        "about a third. Customers have asked for clearer invoices, so the finance team is "
        "redesigning the template. The support desk answered ninety-four percent of tickets "
        "within one working day. Training for the new booking system starts next month."
    ),
    "zh": (
        "本季度报告显示，我们的各地区办事处完成了大部分目标，但北方分公司由于供应链延误而未能达标。"
        "我们预计新仓库将于三月开业，这将使交货时间缩短约三分之一。"
        "客户要求发票更加清晰，因此财务团队正在重新设计模板。"
        "服务台在一个工作日内回复了百分之九十四的工单，高于去年的百分之八十七。"
        "新预订系统的培训将于下个月开始，每位团队负责人应在周五之前提名两名员工。"
        "请记住，超过五百欧元的差旅费用需要事先批准，收据必须在三十天内上传。"
    ),
    "ja": (
        "今四半期の報告によると、地域のオフィスはほとんどの目標を達成しました。"
        "新しい倉庫は三月に開業する予定で、配送時間が約三分の一短くなる見込みです。"
        "お客様からは請求書をもっと分かりやすくしてほしいという声がありました。"
        "サポート窓口は、問い合わせの九十四パーセントに一営業日以内に回答しました。"
        "新しい予約システムの研修は来月始まります。"
    ),
    "ko": (
        "이번 분기 보고서에 따르면 지역 사무소들은 대부분의 목표를 달성했습니다. "
        "새 창고는 3월에 문을 열 예정이며 배송 시간이 약 3분의 1 줄어들 것입니다. "
        "고객들은 더 명확한 청구서를 요청했고 재무팀은 템플릿을 다시 설계하고 있습니다. "
        "지원 데스크는 문의의 94퍼센트에 하루 안에 답변했습니다. "
        "새 예약 시스템 교육은 다음 달에 시작됩니다."
    ),
    "ru": (
        "Квартальный отчёт показывает, что наши региональные офисы выполнили большинство "
        "целей, хотя северный филиал не справился из-за задержек в цепочке поставок. "
        "Мы ожидаем, что новый склад откроется в марте, и это сократит сроки доставки "
        "примерно на треть. Клиенты просили сделать счета понятнее, поэтому финансовый "
        "отдел переделывает шаблон. Служба поддержки ответила на девяносто четыре процента "
        "обращений в течение одного рабочего дня. Обучение работе с новой системой "
        "бронирования начнётся в следующем месяце."
    ),
    "ar": (
        "يُظهر التقرير الفصلي أن مكاتبنا الإقليمية حققت معظم أهدافها، على الرغم من أن فرع "
        "الشمال لم يحقق أهدافه بسبب التأخير في سلسلة التوريد. نتوقع أن يفتتح المستودع الجديد "
        "في شهر مارس، مما سيقلل أوقات التسليم بنحو الثلث. طلب العملاء فواتير أوضح، لذلك يعيد "
        "فريق المالية تصميم النموذج. أجاب مكتب الدعم على أربعة وتسعين في المئة من الطلبات "
        "خلال يوم عمل واحد. يبدأ التدريب على نظام الحجز الجديد الشهر المقبل."
    ),
    "el": (
        "Η τριμηνιαία έκθεση δείχνει ότι τα περιφερειακά μας γραφεία πέτυχαν τους "
        "περισσότερους στόχους, αν και το βόρειο υποκατάστημα υστέρησε λόγω καθυστερήσεων. "
        "Αναμένουμε ότι η νέα αποθήκη θα ανοίξει τον Μάρτιο. Οι πελάτες ζήτησαν πιο σαφή "
        "τιμολόγια, γι' αυτό η οικονομική ομάδα σχεδιάζει ξανά το πρότυπο."
    ),
    "hi": (
        "तिमाही रिपोर्ट से पता चलता है कि हमारे क्षेत्रीय कार्यालयों ने अधिकांश लक्ष्य पूरे किए। "
        "हमें उम्मीद है कि नया गोदाम मार्च में खुलेगा, जिससे डिलीवरी का समय कम हो जाएगा। "
        "ग्राहकों ने स्पष्ट बिल मांगे हैं, इसलिए वित्त टीम टेम्पलेट को फिर से डिज़ाइन कर रही है।"
    ),
}


def document(lang: str, chars: int, seed: int = 0) -> str:
    """About `chars` characters of `lang`: its sentences in a seeded random order."""
    sentences = [s for s in re.split(r"(?<=[。.।])\s*", SENTENCES[lang]) if s]
    rng = random.Random(seed)
    glue = "" if lang in ("zh", "ja") else " "
    out: list[str] = []
    length = 0
    while length < chars:
        out.append(rng.choice(sentences))
        length += len(out[-1]) + len(glue)
    return glue.join(out)[:chars]
