-- Rating progress per rater, for the dashboard.
SELECT rater, role, images_rated, rejected, review_later,
       coalesce(strftime(last_saved, '%m-%d %H:%M'), '-')
FROM rater_progress
ORDER BY rater;
