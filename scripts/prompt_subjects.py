"""Hand-written subjects for the English poem prompts and the slogan prompts (data build input)."""

from __future__ import annotations

#: English poem subjects: (subject as asked, title)
ENGLISH_POEM_SUBJECTS = [
    ("the first snow of winter", "First Snow"), ("a lighthouse at night", "The Lighthouse"),
    ("an old oak tree", "The Old Oak"), ("morning coffee", "Morning Coffee"),
    ("a cat asleep in the sun", "The Sleeping Cat"), ("the sea at dawn", "Dawn Sea"),
    ("a rainy afternoon in the city", "City Rain"), ("autumn leaves", "Autumn Leaves"),
    ("a summer thunderstorm", "Summer Storm"), ("the moon over a lake", "Moon on the Lake"),
    ("a grandmother's kitchen", "Grandmother's Kitchen"), ("a long train journey", "The Train"),
    ("cherry blossoms", "Cherry Blossoms"), ("a lost umbrella", "The Lost Umbrella"),
    ("the last day of school", "Last Day of School"), ("a mountain path", "The Mountain Path"),
    ("a busy market", "The Market"), ("an empty playground", "Empty Playground"),
    ("the smell of bread", "Fresh Bread"), ("a clock that stopped", "The Stopped Clock"),
    ("fireflies in June", "Fireflies"), ("a hospital night nurse", "Night Shift"),
    ("a bicycle ride", "The Bicycle"), ("a frozen pond", "The Frozen Pond"),
    ("a library at closing time", "Closing Time"), ("a fox in the garden", "The Fox"),
    ("a paper boat", "Paper Boat"), ("the desert at noon", "Desert Noon"),
    ("a forgotten letter", "The Letter"), ("a dog waiting by the door", "Waiting"),
    ("spring rain", "Spring Rain"), ("the night sky in the countryside", "Country Stars"),
    ("a violin", "The Violin"), ("a crowded subway", "Rush Hour"),
    ("a garden of tomatoes", "Tomatoes"), ("a kite on a windy day", "The Kite"),
    ("an abandoned house", "The Empty House"), ("a beekeeper", "The Beekeeper"),
    ("a fisherman at sunrise", "The Fisherman"), ("a snowman melting", "The Snowman"),
    ("a sunflower field", "Sunflowers"), ("the sound of the ocean in a shell", "The Shell"),
    ("a robot learning to paint", "The Painting Robot"), ("a chess game in the park", "Chess in the Park"),
    ("a pair of old boots", "Old Boots"), ("a birthday candle", "The Candle"),
    ("a heron in the river", "The Heron"), ("the end of summer", "End of Summer"),
    ("a midnight snack", "Midnight Snack"), ("a windmill", "The Windmill"),
    ("a bridge in the fog", "Bridge in Fog"), ("a stray kitten", "The Stray"),
    ("a teacher's last lesson", "The Last Lesson"), ("a broken vase", "The Broken Vase"),
    ("a harvest moon", "Harvest Moon"), ("a street musician", "The Busker"),
    ("a pine forest in winter", "Winter Pines"), ("a jar of honey", "Honey"),
    ("a child learning to swim", "First Swim"), ("the northern lights", "Northern Lights"),
]

#: Chinese slogan subjects: (what is advertised, the word that must appear, other words that count)
ZH_SLOGAN_SUBJECTS = [
    ("一家社区咖啡馆", "咖啡", []), ("一款新能源汽车", "汽车", ["电车", "新能源车"]),
    ("城市垃圾分类活动", "垃圾分类", ["分类"]), ("一家社区图书馆", "图书馆", ["读书", "阅读"]),
    ("全民健身跑步活动", "跑步", ["健身", "运动"]), ("节约用水倡议", "节水", ["节约用水", "水"]),
    ("一款国产绿茶", "茶", []), ("一家老字号面馆", "面", []),
    ("无偿献血活动", "献血", []), ("校园安全教育周", "安全", []),
    ("一家宠物医院", "宠物", ["猫", "狗"]), ("一款儿童绘本", "绘本", ["童书"]),
    ("乡村旅游节", "乡村", ["田园"]), ("防范电信诈骗宣传", "诈骗", ["反诈"]),
    ("一家手工面包店", "面包", []), ("公共交通出行倡议", "公交", ["地铁", "公共交通"]),
    ("一款智能手表", "手表", ["腕表"]), ("森林防火宣传", "防火", ["森林"]),
    ("一家社区菜市场", "菜", ["市场"]), ("文明养犬倡议", "犬", ["狗"]),
    ("一款护眼台灯", "台灯", ["灯"]), ("光盘行动", "光盘", ["节约粮食", "粮食"]),
    ("一家自行车租赁店", "单车", ["自行车", "骑行"]), ("社区义诊活动", "义诊", ["健康"]),
    ("一家民宿", "民宿", []), ("一款国产电影", "电影", []),
    ("老年人防跌倒宣传", "防跌倒", ["跌倒"]), ("一家花店", "花", ["鲜花"]),
    ("一款有机大米", "大米", ["米"]), ("交通安全宣传", "交通", ["安全出行"]),
    ("一家健身房", "健身", []), ("植树节活动", "植树", ["种树", "树"]),
    ("一款方言学习软件", "方言", []), ("一家茶馆", "茶", []),
    ("全民阅读月", "阅读", ["读书"]), ("一家社区食堂", "食堂", ["吃饭"]),
    ("一款电动牙刷", "牙刷", ["刷牙"]), ("保护野生动物宣传", "野生动物", ["动物"]),
    ("一家博物馆", "博物馆", ["文物"]), ("戒烟倡议", "戒烟", ["烟"]),
    ("一款天然蜂蜜", "蜂蜜", []), ("一家少儿编程班", "编程", ["代码"]),
    ("爱护眼睛宣传", "眼睛", ["护眼", "视力"]), ("一家海鲜餐厅", "海鲜", []),
    ("一家书法培训班", "书法", ["写字"]), ("一款冰淇淋", "冰淇淋", ["冰激凌"]),
    ("节约用电倡议", "节电", ["用电", "电"]), ("一家洗衣店", "洗衣", ["衣服"]),
    ("一款登山鞋", "登山", ["鞋"]), ("社区志愿者招募", "志愿者", ["志愿"]),
]

#: English slogan subjects: (what is advertised, the word that must appear, other words that count)
EN_SLOGAN_SUBJECTS = [
    ("a neighbourhood coffee shop", "coffee", ["espresso", "latte"]), ("an electric car", "car", ["EV"]),
    ("a city recycling campaign", "recycling", ["recycle"]), ("a public library", "library", ["books", "reading"]),
    ("a charity fun run", "run", ["running"]), ("a water-saving campaign", "water", []),
    ("a green tea brand", "tea", []), ("a family noodle restaurant", "noodle", ["noodles"]),
    ("a blood donation drive", "blood", ["donate", "donor"]), ("a school safety week", "safety", ["safe"]),
    ("a veterinary clinic", "pet", ["pets", "vet"]), ("a children's picture book", "book", ["story"]),
    ("a countryside tourism festival", "countryside", ["village", "rural"]),
    ("an anti-phone-scam campaign", "scam", ["scams", "fraud"]),
    ("an artisan bakery", "bread", ["bakery", "baked"]), ("a public transport campaign", "bus", ["train", "transit"]),
    ("a smartwatch", "watch", ["smartwatch"]), ("a wildfire prevention campaign", "fire", ["wildfire"]),
    ("a farmers' market", "market", ["farm", "farmers"]), ("a responsible dog-owner campaign", "dog", ["dogs"]),
    ("a desk lamp", "lamp", ["light"]), ("a food-waste reduction campaign", "food", ["waste"]),
    ("a bike-sharing service", "bike", ["cycle", "cycling"]), ("a free health check day", "health", ["healthy"]),
    ("a seaside guesthouse", "guesthouse", ["stay", "seaside"]), ("an independent film", "film", ["movie"]),
    ("a fall-prevention campaign for seniors", "fall", ["falls"]), ("a flower shop", "flowers", ["flower"]),
    ("an organic rice brand", "rice", []), ("a road safety campaign", "road", ["drive", "driving"]),
    ("a gym", "gym", ["fitness", "workout"]), ("a tree-planting day", "tree", ["trees", "plant"]),
    ("a language-learning app", "language", ["languages", "learn"]), ("a tea house", "tea", []),
    ("a reading month", "reading", ["read", "books"]), ("a community kitchen", "kitchen", ["meal", "meals"]),
    ("an electric toothbrush", "toothbrush", ["teeth", "smile"]), ("a wildlife protection campaign", "wildlife", ["animals"]),
    ("a history museum", "museum", ["history"]), ("a quit-smoking campaign", "smoking", ["smoke", "cigarette"]),
    ("a wildflower honey", "honey", ["bees"]), ("a coding club for kids", "coding", ["code"]),
    ("an eye-care campaign", "eyes", ["eye", "sight", "vision"]), ("a seafood restaurant", "seafood", ["fish"]),
    ("a calligraphy class", "calligraphy", ["writing", "ink"]), ("an ice cream parlour", "ice cream", []),
    ("an energy-saving campaign", "energy", ["power"]), ("a laundromat", "laundry", ["clothes", "wash"]),
    ("hiking boots", "boots", ["hike", "hiking"]), ("a volunteer drive", "volunteer", ["volunteers"]),
]

ZH_BANNED = ["最", "第一", "顶级", "国家级", "极致", "唯一", "首选", "万能", "绝对", "100%"]
EN_BANNED = ["best", "number one", "guaranteed", "cheapest", "free", "ultimate", "perfect", "miracle", "world-class", "unbeatable"]

ZH_LENGTHS = [(4, 8), (6, 10), (8, 12), (10, 16)]
EN_LENGTHS = [(3, 6), (4, 8), (5, 10), (6, 12)]
