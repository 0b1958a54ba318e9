"""Word lists for the synthetic domain data sets of :mod:`models.offline.synthetic`."""


_SHOP = {  # category: (sub-categories, nouns (two per sub-category, in order), price range, brands)
    "Electronics": (("Audio", "Phones", "Cameras"), ("Headphones", "Speaker", "Smartphone",
                    "Charger", "Camera", "Lens"), (15, 900), ("Sonora", "Voltix", "Pixelia", "Ampere")),
    "Home": (("Kitchen", "Furniture", "Lighting"), ("Kettle", "Blender", "Chair", "Shelf",
             "Lamp", "Pendant Light"), (10, 400), ("Hearth", "Nordhem", "Casa", "Lumo")),
    "Sports": (("Running", "Cycling", "Fitness"), ("Running Shoes", "Running Jacket", "Helmet",
               "Jersey", "Yoga Mat", "Dumbbells"), (8, 300), ("Stride", "Apex", "Kinetic", "Vela")),
    "Beauty": (("Skincare", "Hair", "Fragrance"), ("Serum", "Moisturizer", "Shampoo",
               "Hair Dryer", "Perfume", "Eau de Toilette"), (5, 150), ("Lumina", "Petal", "Aura", "Verde")),
    "Books": (("Fiction", "Science", "Cooking"), ("Novel", "Anthology", "Field Guide", "Atlas",
              "Cookbook", "Baking Book"), (6, 60), ("Inkwell", "Folio", "Quarto", "Margin")),
    "Toys": (("Puzzles", "Building", "Outdoor"), ("Puzzle", "Board Game", "Building Set",
             "Robot Kit", "Kite", "Ball"), (5, 120), ("Brickly", "Funfair", "Tinker", "Jolly")),
}
_SHOP_ADJ = {
    "Electronics": ("Wireless", "Compact", "Pro", "Ultra", "Smart"),
    "Home": ("Classic", "Compact", "Eco", "Deluxe", "Minimal"),
    "Sports": ("Pro", "Lightweight", "Trail", "Essential", "Elite"),
    "Beauty": ("Gentle", "Daily", "Organic", "Deluxe", "Travel"),
    "Books": ("Illustrated", "Pocket", "Collected", "Essential", "Modern"),
    "Toys": ("Giant", "Mini", "Classic", "Magnetic", "Wooden"),
}
_SHOP_GOOD = ("Great quality, works exactly as described.", "Love it, worth every penny.",
              "Excellent value and fast delivery.", "Really happy with this purchase.")
_SHOP_BAD = ("Broke after a week, very disappointed.", "Poor quality, not worth the price.",
             "Terrible, returned it.", "Cheap materials and it stopped working.")

_NEWS = {  # category: (sub-topics, subjects, objects)
    "Politics": (("Elections", "Parliament"), ("Lawmakers", "The prime minister", "Voters",
                 "The opposition"), ("a new budget", "election reform", "a tax bill", "a coalition deal")),
    "Sports": (("Football", "Tennis"), ("The champions", "A rookie striker", "The national team",
               "The coach"), ("a late winner", "the title race", "a record transfer", "the final")),
    "Technology": (("AI", "Gadgets"), ("A chip maker", "Researchers", "A startup", "Regulators"),
                   ("a faster processor", "an AI model", "a privacy rule", "a foldable phone")),
    "Business": (("Markets", "Companies"), ("Investors", "The central bank", "A retailer",
                 "Shareholders"), ("interest rates", "quarterly profits", "a merger", "layoffs")),
    "Science": (("Space", "Climate"), ("Astronomers", "A research team", "Climate scientists",
                "NASA"), ("a distant planet", "record temperatures", "a new species", "a comet")),
    "Culture": (("Film", "Music"), ("A director", "The festival", "A pop star", "Critics"),
                ("a surprise album", "the awards", "a sold-out tour", "a box-office hit")),
    "Health": (("Medicine", "Wellbeing"), ("Doctors", "A hospital", "Health officials", "A study"),
               ("a new vaccine", "sleep habits", "a flu wave", "a diet trend")),
}
_NEWS_VERBS = (("announce", "announces"), ("debate", "debates"), ("unveil", "unveils"),
               ("question", "questions"), ("celebrate", "celebrates"), ("warn about", "warns about"))
_NEWS_GOOD = ("Great reporting, thanks.", "Very informative and balanced article.",
              "Excellent piece, I learned a lot.")
_NEWS_BAD = ("Biased and misleading article.", "Terrible headline, clickbait.",
             "Poorly researched, disappointing.")

_VIDEO = {  # genre: (title nouns, adjectives)
    "Drama": (("Crown", "Letters", "Harbor", "Inheritance"), ("Silent", "Broken", "Golden", "Last")),
    "Comedy": (("Roommates", "Office", "Wedding", "Road Trip"), ("Awkward", "Happy", "Crazy", "Little")),
    "Documentary": (("Oceans", "Planet", "Empire", "Machines"), ("Wild", "Hidden", "Ancient", "Frozen")),
    "Sci-Fi": (("Colony", "Signal", "Orbit", "Android"), ("Dark", "Distant", "Electric", "Final")),
    "Crime": (("Detective", "Heist", "Cartel", "Witness"), ("Cold", "Perfect", "Dirty", "Quiet")),
    "Animation": (("Dragon", "Robots", "Forest", "Kingdom"), ("Tiny", "Brave", "Magic", "Secret")),
    "Reality": (("Kitchen", "Island", "Makeover", "Talent"), ("Ultimate", "Big", "Real", "Hot")),
}
_VIDEO_GOOD = ("Loved it, brilliant acting.", "Amazing episode, can't wait for more.",
               "Great fun, highly recommend.")
_VIDEO_BAD = ("Boring and predictable.", "Awful writing, gave up halfway.",
              "Disappointing, a waste of time.")
